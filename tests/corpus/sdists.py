"""Build the corpus's sdist archives at test time (binary files stay out of git).

`build(name, folder)` writes `demo-<name>-1.0.tar.gz` into `folder` and returns
(path, sha256 to record in base.toml). Hostile archives are the demo sdist plus
one bad member; "dir-symlink" is a good archive with a folder symlink.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

TOP = "demo-1.0"
MTIME = 1738000000
GOOD = {
    "setup.py": b"from setuptools import setup\nsetup(name='demo', version='1.0')\n",
    "README.md": b"# demo\n",
    "tools/run.sh": b"#!/bin/sh\necho run\n",
}


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0,
          link: str = "") -> tarfile.TarInfo:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mtime, info.mode = kind, size, link, MTIME, 0o644
    return info


def build(name: str, folder: Path) -> tuple[Path, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for member, content in GOOD.items():
            tar.addfile(_info(f"{TOP}/{member}", size=len(content)), io.BytesIO(content))
        if name == "absolute-member":
            tar.addfile(_info("/etc/passwd", size=5), io.BytesIO(b"root\n"))
        elif name == "dotdot-member":
            tar.addfile(_info(f"{TOP}/../../outside.txt", size=5), io.BytesIO(b"pwned"))
        elif name == "device-member":
            info = _info(f"{TOP}/dev-null", tarfile.CHRTYPE)
            info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
        elif name == "symlink-out":
            tar.addfile(_info(f"{TOP}/docs/passwd", tarfile.SYMTYPE, link="../../../etc/passwd"))
        elif name == "hard-link":
            tar.addfile(_info(f"{TOP}/hard", tarfile.LNKTYPE, link="/etc/passwd"))
        elif name == "git-member":
            tar.addfile(_info(f"{TOP}/.git/hooks/post-checkout", size=5), io.BytesIO(b"pwned"))
        elif name == "dir-symlink":
            tar.addfile(_info(f"{TOP}/demo/linkdir", tarfile.SYMTYPE, link="../tools"))
        elif name != "hash-mismatch":
            raise ValueError(f"unknown corpus sdist {name!r}")
    data = buffer.getvalue()
    path = folder / f"demo-{name}-1.0.tar.gz"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    if name == "hash-mismatch":
        sha = hashlib.sha256(data + b"tampered").hexdigest()
    return path, sha
