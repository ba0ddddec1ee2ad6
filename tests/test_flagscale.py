"""flagscale: reading FlagScale's hardware/ folder (current per-file, squashed and
encrypted layouts, the legacy commit folders) into typed patch groups; hostile trees
(escaping paths, symlinks, tampered or wrongly keyed encryption) refused cleanly.

The FlagScale trees here are synthetic, written by the tests in FlagScale's formats."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.padding import PKCS7

from patchtool.core.errors import (
    ExitCode,
    IntegrityError,
    NotFoundError,
    PatchtoolError,
    UnsafeInputError,
)
from patchtool.vendors.flagscale import (
    PLACEHOLDER_AUTHOR,
    PLACEHOLDER_DATE,
    BackendSet,
    component_of,
    read_flagscale,
    render_plan,
)

FS_COMMIT = "1e5ead5bca0efbed0937d13b106e82326cd5754c"
VLLM_COMMIT = "ba41cc90e8ef7f236347b2f1599eec2cbb9e1f0d"
MEGATRON_COMMIT = "0123456789abcdef0123456789abcdef01234567"
HISTORY_COMMITS = (
    "2c0b2d6123bab89e85b84e2a33ba7bd50f70de48",
    "56143887976082d1d6729fadb0cafd4fe44e8cd6",
)


# --------------------------------------------------------------------------- building trees


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def diff_yaml(
    device: str,
    backend: str,
    version: str = "0.8.5",
    commit: str | None = VLLM_COMMIT,
    contact: str = "",
    extra: str = "",
) -> str:
    """diff.yaml as FlagScale's tool writes it (yaml.dump, sorted keys)."""
    commits = f"backends_commit:\n  {backend}: {commit}\n" if commit else "backends_commit: {}\n"
    return (
        f"{commits}backends_version:\n  {backend}: {version}\ncommit: {FS_COMMIT}\n"
        f"contact: '{contact}'\ndevice_type: {device}\nmodels:\n- deepseek_r1\n- qwen3\n"
        f"task:\n- inference\n{extra}"
    )


def modify(path: str, number: int = 0) -> str:
    return (
        f"diff --git a/{path} b/{path}\n"
        "index 1111111..2222222 100644\n"
        f"--- a/{path}\n"
        f"+++ b/{path}\n"
        "@@ -1,2 +1,2 @@\n"
        " first line\n"
        f"-old {number}\n"
        f"+new {number}\n"
    )


def create(path: str) -> str:
    return (
        f"diff --git a/{path} b/{path}\n"
        "new file mode 100644\n"
        "index 0000000..3333333\n"
        "--- /dev/null\n"
        f"+++ b/{path}\n"
        "@@ -0,0 +1 @@\n"
        "+hello\n"
    )


def delete(path: str) -> str:
    return (
        f"diff --git a/{path} b/{path}\n"
        "deleted file mode 100644\n"
        "index 4444444..0000000\n"
        f"--- a/{path}\n"
        "+++ /dev/null\n"
        "@@ -1 +0,0 @@\n"
        "-bye\n"
    )


BINARY = (
    "diff --git a/assets/logo.bin b/assets/logo.bin\n"
    "index 5555555..6666666 100644\n"
    "GIT binary patch\n"
    "literal 4\n"
    "LcmZQzWMT#Y01f~L\n"
    "\n"
    "literal 3\n"
    "KcmZQzWME_f00IC2\n"
    "\n"
)


def squashed_tree(root: Path, patch: str | bytes, device: str = "Metax_C550") -> Path:
    """A current-layout tree with one squashed diff.patch for vllm."""
    return write(
        root,
        {
            f"hardware/{device}/vllm/diff.yaml": diff_yaml(device, "vllm"),
            f"hardware/{device}/vllm/diff.patch": patch,
        },
    )


def read_one(root: Path, **options: object) -> BackendSet:
    sets = read_flagscale(root, **options)  # type: ignore[arg-type]
    assert len(sets) == 1
    return sets[0]


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(path.relative_to(root)), path.lstat().st_size) for path in root.rglob("*"))


def refusal(kind: type[PatchtoolError], code: ExitCode, root: Path, **options: object) -> str:
    before = listing(root) if root.exists() else []
    with pytest.raises(kind) as caught:
        read_flagscale(root, **options)  # type: ignore[arg-type]
    assert caught.value.exit_code == code
    assert (listing(root) if root.exists() else []) == before  # nothing changed
    return caught.value.message


# --------------------------------------------------------------------------- per-file layout

PER_FILE_PATHS = (
    [f"vllm/model_executor/layers/fused_moe/kernel_{i:03d}.py" for i in range(120)]
    + [f"vllm/attention/backends/backend_{i:02d}.py" for i in range(60)]
    + [f"vllm/platforms/maca_{i:02d}.py" for i in range(40)]
    + ["vllm/envs.py", "vllm/utils.py", "vllm/_custom_ops.py"]
    + [f"csrc/moe/moe_{i:02d}.cu" for i in range(50)]
    + [f"tests/kernels/test_{i:02d}.py" for i in range(25)]
    + ["setup.py", "CMakeLists.txt", "requirements/maca.txt", "benchmarks/bench.py"]
)


@pytest.fixture
def per_file_tree(tmp_path: Path) -> Path:
    files: dict[str, str | bytes] = {
        "hardware/Metax_C550/vllm/diff.yaml": diff_yaml(
            "Metax_C550", "vllm", contact="vendor.dev@metax-tech.com"
        )
    }
    # Written in an order unlike the sorted one; FlagScale adds "\n" after each section.
    for number, path in enumerate(reversed(PER_FILE_PATHS)):
        section = create(path) if path.endswith("maca.txt") else modify(path, number)
        files[f"hardware/Metax_C550/vllm/{path}.patch"] = section + "\n"
    return write(tmp_path / "FlagScale", files)


def test_per_file_layout_of_302_files_groups_by_component_in_a_fixed_order(
    per_file_tree: Path,
) -> None:
    assert len(PER_FILE_PATHS) == 302
    found = read_one(per_file_tree)

    assert (found.device, found.flagscale_device, found.backend, found.project) == (
        "metax_C550", "Metax_C550", "vllm", "vllm",
    )  # fmt: skip
    assert (found.version, found.commit, found.flagscale_commit, found.layout) == (
        "0.8.5", VLLM_COMMIT, FS_COMMIT, "per-file",
    )  # fmt: skip
    assert found.author == "vendor.dev <vendor.dev@metax-tech.com>"
    assert found.date == PLACEHOLDER_DATE
    assert (found.contact, found.models, found.task) == (
        "vendor.dev@metax-tech.com", ("deepseek_r1", "qwen3"), ("inference",),
    )  # fmt: skip
    assert found.skipped == ()
    assert [(group.component, len(group.files)) for group in found.groups] == [
        ("CMakeLists.txt", 1),
        ("benchmarks", 1),
        ("csrc", 50),
        ("requirements", 1),
        ("setup.py", 1),
        ("tests", 25),
        ("vllm", 3),
        ("vllm/attention", 60),
        ("vllm/model_executor", 120),
        ("vllm/platforms", 40),
    ]
    every = [file.path for group in found.groups for file in group.files]
    assert sorted(every) == sorted(PER_FILE_PATHS)
    for group in found.groups:
        paths = [file.path for file in group.files]
        assert paths == sorted(paths)
    assert [file.path for file in found.groups[6].files] == [
        "vllm/_custom_ops.py", "vllm/envs.py", "vllm/utils.py",
    ]  # fmt: skip

    moe = found.groups[8]
    assert moe.subject == "model_executor: metax_C550 changes from FlagScale"
    first = moe.files[0]
    assert first.path == "vllm/model_executor/layers/fused_moe/kernel_000.py"
    assert (
        first.source
        == "hardware/Metax_C550/vllm/vllm/model_executor/layers/fused_moe/kernel_000.py.patch"
    )
    number = len(PER_FILE_PATHS) - 1 - PER_FILE_PATHS.index(first.path)
    assert first.text == modify(first.path, number).encode()  # FlagScale's extra "\n" is gone
    assert moe.diff() == b"".join(file.text for file in moe.files)
    assert moe.body.splitlines()[:6] == [
        "The vllm/model_executor part of Metax_C550's changes in FlagScale's hardware",
        "folder, from the per-file patches under hardware/Metax_C550/vllm/.",
        "",
        f"FlagScale commit: {FS_COMMIT}",
        "Sources:",
        "  hardware/Metax_C550/vllm/vllm/model_executor/layers/fused_moe/kernel_000.py.patch",
    ]
    assert moe.body.endswith("\n\nUpstream-Status: Pending\n")
    assert len(moe.body.splitlines()) == 5 + 120 + 2
    assert found.groups[4].subject == "setup.py: metax_C550 changes from FlagScale"
    assert found.notes == (
        "FlagScale's Metax_C550 is patchtool's device metax_C550",
        f"diff.yaml names vllm 0.8.5 and commit {VLLM_COMMIT}: the patch was made on that "
        "commit, which need not be the 0.8.5 release",
        "author from diff.yaml's contact, an address only: the name is its local part",
        f"date is the placeholder {PLACEHOLDER_DATE}: FlagScale records no date outside git",
    )


def test_the_same_tree_reads_the_same_every_time(per_file_tree: Path) -> None:
    assert read_flagscale(per_file_tree) == read_flagscale(per_file_tree)


def test_per_file_patch_must_change_the_file_its_place_names(tmp_path: Path) -> None:
    write(tmp_path, {
        "hardware/Dev_A/vllm/diff.yaml": diff_yaml("Dev_A", "vllm"),
        "hardware/Dev_A/vllm/vllm/envs.py.patch": modify("vllm/utils.py"),
    })  # fmt: skip
    message = refusal(IntegrityError, ExitCode.INTEGRITY, tmp_path)
    assert message == (
        "hardware/Dev_A/vllm/vllm/envs.py.patch: its diff is for 'vllm/utils.py', not "
        "'vllm/envs.py' as its place says"
    )
    (tmp_path / "hardware/Dev_A/vllm/vllm/envs.py.patch").write_text(
        modify("vllm/envs.py") + modify("vllm/utils.py")
    )
    message = refusal(IntegrityError, ExitCode.INTEGRITY, tmp_path)
    assert message == (
        "hardware/Dev_A/vllm/vllm/envs.py.patch: holds 2 file diffs; a per-file patch holds one"
    )


def test_components_under_each_backends_package_folder() -> None:
    assert component_of("vllm", "vllm/model_executor/layers/x.py") == "vllm/model_executor"
    assert component_of("vllm", "vllm/envs.py") == "vllm"
    assert component_of("vllm", "csrc/a/b.cu") == "csrc"
    assert component_of("vllm", "setup.py") == "setup.py"
    assert component_of("sglang", "python/sglang/srt/layers/x.py") == "python/sglang/srt"
    assert component_of("sglang", "python/pyproject.toml") == "python"
    assert component_of("Megatron-LM", "megatron/core/transformer/x.py") == "megatron/core"
    assert component_of("Megatron-LM", "megatron/training/x.py") == "megatron/training"
    assert component_of("FlagScale", "flagscale/runner/x.py") == "flagscale/runner"
    assert component_of("FlagScale", "examples/a/conf.yaml") == "examples"


# --------------------------------------------------------------------------- squashed diff.patch


def test_squashed_diff_patch_is_split_per_file_and_grouped(tmp_path: Path) -> None:
    patch = (
        modify("vllm/model_executor/layers/fused_moe/fused_moe.py")
        + create("vllm/platforms/maca.py")
        + BINARY
        + delete("tests/old_test.py")
        + "diff --git a/vllm/attention/old.py b/vllm/attention/new.py\n"
        "similarity index 100%\n"
        "rename from vllm/attention/old.py\n"
        "rename to vllm/attention/new.py\n" + modify("vllm/envs.py") + "\n"
    )
    found = read_one(squashed_tree(tmp_path, patch))

    assert found.layout == "diff"
    assert [(g.component, [f.path for f in g.files]) for g in found.groups] == [
        ("assets", ["assets/logo.bin"]),
        ("tests", ["tests/old_test.py"]),
        ("vllm", ["vllm/envs.py"]),
        ("vllm/attention", ["vllm/attention/new.py"]),
        ("vllm/model_executor", ["vllm/model_executor/layers/fused_moe/fused_moe.py"]),
        ("vllm/platforms", ["vllm/platforms/maca.py"]),
    ]
    by_path = {f.path: f for g in found.groups for f in g.files}
    assert by_path["assets/logo.bin"].text == BINARY.encode()  # kept whole, blank lines too
    assert by_path["vllm/envs.py"].text == modify("vllm/envs.py").encode()
    assert {f.source for f in by_path.values()} == {"hardware/Metax_C550/vllm/diff.patch"}
    assert b"".join(g.diff() for g in found.groups) == b"".join(
        by_path[path].text for path in sorted(by_path, key=lambda p: (component_of("vllm", p), p))
    )
    assert found.groups[2].body == (
        "The vllm part of Metax_C550's changes in FlagScale's hardware\n"
        "folder, from the squashed patch hardware/Metax_C550/vllm/diff.patch.\n\n"
        f"FlagScale commit: {FS_COMMIT}\nFiles:\n  vllm/envs.py\n\nUpstream-Status: Pending\n"
    )


def test_a_removed_line_that_reads_like_a_signature_stays_in_its_hunk(tmp_path: Path) -> None:
    section = (
        "diff --git a/docs/list.md b/docs/list.md\n"
        "--- a/docs/list.md\n"
        "+++ b/docs/list.md\n"
        "@@ -1,3 +1,2 @@\n"
        " head\n"
        "-- \n"
        "\n"  # git reads an empty line inside a hunk as empty context
    )
    found = read_one(squashed_tree(tmp_path, section + modify("setup.py")))
    assert [f.text for g in found.groups for f in g.files] == [
        section.encode(), modify("setup.py").encode(),
    ]  # fmt: skip


def test_real_git_diff_split_into_groups_applies_like_the_whole(tmp_path: Path) -> None:
    """FlagScale's `git diff --binary <base> HEAD` of a vLLM-like tree (quoted non-ASCII
    names, names with spaces, a rename, a binary file, a deletion, a mode change): the
    groups, applied one after another, give exactly the tree the whole patch gives."""
    repo = tmp_path / "vllm-src"
    write(repo, {
        "vllm/model_executor/layers/fused_moe.py": "".join(f"line {i}\n" for i in range(40)),
        "vllm/envs.py": "A = 1\n",
        "vllm/dëvice.py": "name = 'old'\n",
        "vllm/attention/old.py": "".join(f"attention {i}\n" for i in range(20)),
        "csrc/ops.cu": "// ops\n",
        "docs/list with space.md": "head\n- \ntail\n",
        "assets/logo.bin": bytes(range(256)),
        "tests/removed.py": "bye\n",
        "tools/run.sh": "echo run\n",
        "setup.py": "setup()\n",
    })  # fmt: skip
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "--quiet"], check=True)
    subprocess.run([*git, "add", "--all"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "base"], check=True)
    write(repo, {
        "vllm/model_executor/layers/fused_moe.py": "".join(
            f"line {i}\n" if i % 7 else f"maca {i}\n" for i in range(40)),
        "vllm/dëvice.py": "name = 'maca'\n",
        "docs/list with space.md": "head\ntail\n",
        "docs/new name.md": "new\n",
        "assets/logo.bin": bytes(reversed(range(256))),
        "setup.py": "setup(name='vllm-maca')\n",
    })  # fmt: skip
    (repo / "tests/removed.py").unlink()
    (repo / "vllm/attention/old.py").rename(repo / "vllm/attention/new.py")
    (repo / "tools/run.sh").chmod(0o755)
    subprocess.run([*git, "add", "--all"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "maca"], check=True)
    diff = subprocess.run(
        [*git, "diff", "--binary", "HEAD~1", "HEAD"], check=True, capture_output=True
    ).stdout
    assert b'"a/vllm/d\\303\\253vice.py"' in diff and b"rename from" in diff
    found = read_one(squashed_tree(tmp_path / "FlagScale", diff + b"\n"))
    assert [g.component for g in found.groups] == [
        "assets", "docs", "setup.py", "tests", "tools", "vllm", "vllm/attention",
        "vllm/model_executor",
    ]  # fmt: skip
    assert [f.path for f in found.groups[1].files] == [
        "docs/list with space.md",
        "docs/new name.md",
    ]
    assert [f.path for f in found.groups[5].files] == ["vllm/dëvice.py"]

    wanted = subprocess.run([*git, "rev-parse", "HEAD^{tree}"], check=True, capture_output=True,
                            text=True).stdout  # fmt: skip
    subprocess.run([*git, "checkout", "--quiet", "HEAD~1"], check=True)
    for group in found.groups:
        subprocess.run([*git, "apply", "--index", "-"], input=group.diff(), check=True)
    tree = subprocess.run([*git, "write-tree"], check=True, capture_output=True, text=True)
    assert tree.stdout == wanted


# --------------------------------------------------------------------------- encrypted


@pytest.fixture(scope="module")
def vendor_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)  # as FlagScale does


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def encrypt(plain: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """FlagScale's format, with a fixed AES key and IV so that tampering is repeatable."""
    aes_key, iv = bytes(range(32)), bytes(range(100, 116))
    padder = PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    body = encryptor.update(padded) + encryptor.finalize()
    oaep = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )
    return iv + key.public_key().encrypt(aes_key, oaep) + body


def key_folder(where: Path, key: rsa.RSAPrivateKey) -> Path:
    """FlagScale's --key-path: a folder holding private_key.pem (traditional PEM)."""
    where.mkdir(parents=True)
    (where / "private_key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))  # fmt: skip
    return where


ENCRYPTED_PATCH = modify("vllm/envs.py") + create("csrc/maca.cu") + BINARY + "\n"


def encrypted_tree(root: Path, data: bytes) -> Path:
    return write(root, {
        "hardware/BI_V150/vllm/diff.yaml": diff_yaml("BI_V150", "vllm", version="0.9.2",
                                                     contact="someone@iluvatar.com"),
        "hardware/BI_V150/vllm/diff.patch.encrypted": data,
    })  # fmt: skip


def test_encrypted_diff_decrypts_in_memory_and_reads_like_the_plain_one(
    tmp_path: Path, vendor_key: rsa.RSAPrivateKey
) -> None:
    keys = key_folder(tmp_path / "keys", vendor_key)
    root = encrypted_tree(tmp_path / "FlagScale", encrypt(ENCRYPTED_PATCH.encode(), vendor_key))
    before = listing(tmp_path)

    found = read_one(root, private_key=keys)  # the folder, as FlagScale's --key-path
    assert read_one(root, private_key=keys / "private_key.pem") == found  # or the file
    plain = read_one(squashed_tree(tmp_path / "plain", ENCRYPTED_PATCH, device="BI_V150"))

    assert listing(tmp_path)[: len(before)] == before  # no plaintext written anywhere
    assert not [name for name, _ in listing(tmp_path / "FlagScale") if "encrypted" not in name
                and name.endswith(".patch")]  # fmt: skip
    assert found.layout == "encrypted" and found.skipped == ()
    assert [(g.component, [f.path for f in g.files]) for g in found.groups] == [
        ("assets", ["assets/logo.bin"]), ("csrc", ["csrc/maca.cu"]), ("vllm", ["vllm/envs.py"]),
    ]  # fmt: skip
    assert [g.diff() for g in found.groups] == [g.diff() for g in plain.groups]
    assert {f.source for g in found.groups for f in g.files} == {
        "hardware/BI_V150/vllm/diff.patch.encrypted"
    }
    assert "from the encrypted squashed patch hardware/BI_V150/vllm/diff.patch.encrypted" in (
        found.groups[0].body.replace("\n", " ")
    )


def test_encrypted_without_a_key_is_listed_as_skipped(
    tmp_path: Path, vendor_key: rsa.RSAPrivateKey
) -> None:
    root = encrypted_tree(tmp_path, encrypt(ENCRYPTED_PATCH.encode(), vendor_key))
    write(root, {
        "hardware/Dev_B/vllm/diff.yaml": diff_yaml("Dev_B", "vllm"),
        "hardware/Dev_B/vllm/vllm/envs.py.patch.encrypted": encrypt(
            modify("vllm/envs.py").encode(), vendor_key),
        "hardware/Dev_B/vllm/vllm/utils.py.patch": modify("vllm/utils.py"),
    })  # fmt: skip
    first, second = read_flagscale(root)
    assert (first.layout, first.groups) == ("encrypted", ())
    assert first.skipped == (
        "hardware/BI_V150/vllm/diff.patch.encrypted: encrypted; pass the vendor's private key "
        "to read it",
    )
    assert second.layout == "per-file"
    assert [f.path for g in second.groups for f in g.files] == ["vllm/utils.py"]
    assert second.skipped == (
        "hardware/Dev_B/vllm/vllm/envs.py.patch.encrypted: encrypted; pass the vendor's private "
        "key to read it",
    )
    keys = key_folder(tmp_path / "keys", vendor_key)
    second = read_flagscale(root, device="Dev_B", private_key=keys)[0]
    assert [f.path for g in second.groups for f in g.files] == ["vllm/envs.py", "vllm/utils.py"]


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d: flip(d, 0), "decrypts to text that is not a git diff"),  # IV: first block
        (lambda d: flip(d, 16 + 100), "its AES key cannot be decrypted with {key}"),
        (lambda d: flip(d, len(d) - 17), "decrypts with a bad PKCS#7 padding"),  # the padding
        (lambda d: d[:-5], "{size} bytes is not an IV, a 512-byte key block and whole AES blocks"),
        (lambda d: d[:600], "600 bytes is not an IV, a 512-byte key block and whole AES blocks"),
    ],
    ids=["iv-byte", "key-block-byte", "padding-byte", "truncated", "no-body"],
)
def test_tampered_encrypted_patch_fails_cleanly(
    tmp_path: Path,
    vendor_key: rsa.RSAPrivateKey,
    tamper: Callable[[bytes], bytes],
    message: str,
) -> None:
    keys = key_folder(tmp_path / "keys", vendor_key)
    data = tamper(encrypt(ENCRYPTED_PATCH.encode(), vendor_key))
    root = encrypted_tree(tmp_path / "FlagScale", data)
    got = refusal(IntegrityError, ExitCode.INTEGRITY, root, private_key=keys)
    expected = message.format(key=keys / "private_key.pem", size=len(data))
    assert got == f"hardware/BI_V150/vllm/diff.patch.encrypted: {expected}"


def test_garbage_in_the_middle_of_an_encrypted_patch_fails_cleanly(
    tmp_path: Path, vendor_key: rsa.RSAPrivateKey
) -> None:
    keys = key_folder(tmp_path / "keys", vendor_key)
    data = encrypt(ENCRYPTED_PATCH.encode(), vendor_key)
    root = encrypted_tree(tmp_path / "FlagScale", flip(data, 16 + 512 + 40))
    got = refusal(IntegrityError, ExitCode.INTEGRITY, root, private_key=keys)
    assert got.startswith("hardware/BI_V150/vllm/diff.patch.encrypted")


@pytest.mark.parametrize(
    ("plain", "message"),
    [
        (b"\xff\xfe not text", "decrypts to bytes that are not UTF-8 text (byte 0)"),
        (b"just some notes\n", "decrypts to text that is not a git diff"),
    ],
)
def test_decrypted_text_must_be_a_utf8_diff(
    tmp_path: Path, vendor_key: rsa.RSAPrivateKey, plain: bytes, message: str
) -> None:
    keys = key_folder(tmp_path / "keys", vendor_key)
    root = encrypted_tree(tmp_path / "FlagScale", encrypt(plain, vendor_key))
    got = refusal(IntegrityError, ExitCode.INTEGRITY, root, private_key=keys)
    assert got == f"hardware/BI_V150/vllm/diff.patch.encrypted: {message}"


def test_wrong_key_fails_cleanly(
    tmp_path: Path, vendor_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    keys = key_folder(tmp_path / "other", other_key)
    root = encrypted_tree(tmp_path / "FlagScale", encrypt(ENCRYPTED_PATCH.encode(), vendor_key))
    got = refusal(IntegrityError, ExitCode.INTEGRITY, root, private_key=keys)
    # A 2048-bit key reads a 256-byte key block: the lengths no longer add up, or OAEP fails.
    assert got.startswith("hardware/BI_V150/vllm/diff.patch.encrypted: ")
    assert "AES key cannot be decrypted" in got or "256-byte key block" in got
    same_size = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    keys = key_folder(tmp_path / "same-size", same_size)
    got = refusal(IntegrityError, ExitCode.INTEGRITY, root, private_key=keys)
    assert got == (
        "hardware/BI_V150/vllm/diff.patch.encrypted: its AES key cannot be decrypted with "
        f"{keys / 'private_key.pem'}"
    )


def test_unusable_private_key_is_a_usage_error(tmp_path: Path) -> None:
    root = encrypted_tree(tmp_path / "FlagScale", b"x" * 600)
    (tmp_path / "not-a-key.pem").write_text("hello\n")
    message = refusal(PatchtoolError, ExitCode.USAGE, root, private_key=tmp_path / "not-a-key.pem")
    assert message == f"{tmp_path / 'not-a-key.pem'} is not a PEM private key"
    message = refusal(NotFoundError, ExitCode.NOT_FOUND, root, private_key=tmp_path / "nowhere")
    assert message == f"private key {tmp_path / 'nowhere'} does not exist"


# --------------------------------------------------------------------------- legacy


LEGACY_MAIL = (
    "From a72d05ea1c2342eb82e20fdce02fd7bcfc9a1a1e Mon Sep 17 00:00:00 2001\n"
    "From: Vendor Engineer <engineer@vendor.example>\n"
    "Date: Wed, 16 Oct 2024 14:08:35 +0800\n"
    "Subject: [PATCH] support the X100 in vllm and megatron\n"
    "\n"
    "Squashed vendor changes.\n"
    "---\n"
    " vllm/vllm/worker/worker.py | 2 +-\n"
    " 5 files changed\n"
    "\n"
    + modify("vllm/vllm/worker/worker.py")
    + create("vllm/csrc/x100.cu")
    + modify("megatron/training.py")
    + "diff --git a/vllm/README.md b/docs/vllm.md\n"
    "similarity index 100%\n"
    "rename from vllm/README.md\n"
    "rename to docs/vllm.md\n"
    "diff --git a/vllm/tests/list.md b/vllm/tests/list.md\n"
    "--- a/vllm/tests/list.md\n"
    "+++ b/vllm/tests/list.md\n"
    "@@ -1,2 +1 @@\n"
    " head\n"
    "-- \n" + modify("examples/run.yaml") + "-- \n2.34.1\n\n"
)


def test_legacy_commit_folder_strips_vllm_and_reports_the_rest(tmp_path: Path) -> None:
    write(tmp_path, {"hardware/CZ_A100/085811f4/085811f4.patch": LEGACY_MAIL})
    found = read_one(tmp_path)

    assert (found.device, found.backend, found.project, found.layout) == (
        "CZ_A100", "vllm", "vllm", "legacy",
    )  # fmt: skip
    assert (found.version, found.commit, found.flagscale_commit) == (None, None, None)
    assert found.author == "Vendor Engineer <engineer@vendor.example>"
    assert found.date == "2024-10-16T14:08:35+08:00"
    assert [(g.component, [f.path for f in g.files]) for g in found.groups] == [
        ("csrc", ["csrc/x100.cu"]),
        ("tests", ["tests/list.md"]),
        ("vllm/worker", ["vllm/worker/worker.py"]),
    ]
    worker = found.groups[2].files[0]
    assert worker.text == modify("vllm/worker/worker.py").encode()  # -p1 against vLLM's root
    assert worker.source == "hardware/CZ_A100/085811f4/085811f4.patch"
    assert (
        found.groups[1].files[0].text.endswith(b" head\n-- \n")
    )  # a removed "- ", not the signature
    assert found.skipped == (
        "hardware/CZ_A100/085811f4/085811f4.patch: megatron/training.py lies outside vllm/ "
        "(not vLLM), not imported",
        "hardware/CZ_A100/085811f4/085811f4.patch: vllm/README.md -> docs/vllm.md moves a file "
        "across vllm/, not imported",
        "hardware/CZ_A100/085811f4/085811f4.patch: examples/run.yaml lies outside vllm/ "
        "(not vLLM), not imported",
    )
    assert found.notes == (
        "legacy layout: FlagScale base commit 085811f4 (an abbreviated id); vLLM under vllm/ of "
        "FlagScale, read with vllm/ stripped",
        "legacy patches name no vLLM version or commit: choose the base with --commit-id",
    )
    assert found.groups[0].body == (
        "The csrc part of CZ_A100's changes in FlagScale's hardware\n"
        "folder, from the legacy squashed patch hardware/CZ_A100/085811f4/085811f4.patch "
        "(FlagScale base 085811f4, message 'support the X100 in vllm and megatron').\n\n"
        "FlagScale commit: not recorded\nFiles:\n  csrc/x100.cu\n\nUpstream-Status: Pending\n"
    )


def test_legacy_quoted_names_are_rewritten_the_way_git_writes_them(tmp_path: Path) -> None:
    section = (
        'diff --git "a/vllm/d\\303\\253vice name.py" "b/vllm/d\\303\\253vice name.py"\n'
        "new file mode 100644\n"
        "--- /dev/null\n"
        '+++ "b/vllm/d\\303\\253vice name.py"\t\n'
        "@@ -0,0 +1 @@\n"
        "+x\n"
    )
    write(tmp_path, {"hardware/Dev_C/0123abcd/0123abcd.patch": section})
    found = read_one(tmp_path)
    [file] = [f for g in found.groups for f in g.files]
    assert file.path == "dëvice name.py"
    assert file.text == (
        b'diff --git "a/d\\303\\253vice name.py" "b/d\\303\\253vice name.py"\n'
        b"new file mode 100644\n--- /dev/null\n"
        b'+++ "b/d\\303\\253vice name.py"\t\n@@ -0,0 +1 @@\n+x\n'
    )
    assert found.author == PLACEHOLDER_AUTHOR  # a plain diff, not a mail


# --------------------------------------------------------------------------- hostile trees


@pytest.mark.parametrize(
    ("section", "why"),
    [
        (modify("../outside.py"), "'../outside.py' climbs out of the tree with '..'"),
        (
            modify("vllm/../../etc/passwd"),
            "'vllm/../../etc/passwd' climbs out of the tree with '..'",
        ),
        (
            'diff --git "a//etc/passwd" "b//etc/passwd"\n--- "a//etc/passwd"\n+++ "b//etc/passwd"\n'
            "@@ -1 +1 @@\n-a\n+b\n",
            "'/etc/passwd' is absolute",
        ),
        (modify(".git/hooks/post-checkout"), "'.git/hooks/post-checkout' points into .git"),
        (modify("vllm/.GIT/config"), "'vllm/.GIT/config' points into .git"),
        (
            'diff --git "a/x\\ny" "b/x\\ny"\n--- "a/x\\ny"\n+++ "b/x\\ny"\n@@ -1 +1 @@\n-a\n+b\n',
            "'x\\ny' holds the control character U+000A",
        ),
        (
            "diff --git a/ok.py b/../evil.py\nrename from ok.py\nrename to ../evil.py\n",
            "'../evil.py' climbs out of the tree with '..'",
        ),
    ],
    ids=["dotdot", "inner-dotdot", "absolute", "dotgit", "dotgit-case", "newline", "rename-out"],
)
def test_escaping_paths_are_refused(tmp_path: Path, section: str, why: str) -> None:
    squashed_tree(tmp_path, modify("setup.py") + section)
    message = refusal(UnsafeInputError, ExitCode.UNSAFE, tmp_path)
    assert message == f"hardware/Metax_C550/vllm/diff.patch, line 9: the path {why}"


def test_escaping_per_file_place_and_legacy_paths_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "a", {
        "hardware/Dev_A/vllm/diff.yaml": diff_yaml("Dev_A", "vllm"),
        "hardware/Dev_A/vllm/.git/config.patch": modify(".git/config"),
    })  # fmt: skip
    message = refusal(UnsafeInputError, ExitCode.UNSAFE, tmp_path / "a")
    assert message == (
        "hardware/Dev_A/vllm/.git/config.patch: the path '.git/config' points into .git"
    )
    write(tmp_path / "b", {"hardware/Dev_A/0123abcd/0123abcd.patch": modify("vllm/../setup.py")})
    message = refusal(UnsafeInputError, ExitCode.UNSAFE, tmp_path / "b")
    assert message == (
        "hardware/Dev_A/0123abcd/0123abcd.patch, line 1: the path 'vllm/../setup.py' climbs out "
        "of the tree with '..'"
    )


def test_symlinks_and_special_files_are_refused(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret", {"id_rsa": "secret\n", "dir/x.patch": modify("x")})

    root = squashed_tree(tmp_path / "linked-file", modify("setup.py"))
    patch = root / "hardware/Metax_C550/vllm/diff.patch"
    patch.unlink()
    patch.symlink_to(secret / "id_rsa")
    assert refusal(UnsafeInputError, ExitCode.UNSAFE, root) == (
        "hardware/Metax_C550/vllm/diff.patch is a symlink; patchtool reads plain files and "
        "folders only"
    )

    root = write(tmp_path / "linked-folder", {
        "hardware/Dev_A/vllm/diff.yaml": diff_yaml("Dev_A", "vllm"),
        "hardware/Dev_A/vllm/setup.py.patch": modify("setup.py"),
    })  # fmt: skip
    (root / "hardware/Dev_A/vllm/vllm").symlink_to(secret / "dir")
    assert refusal(UnsafeInputError, ExitCode.UNSAFE, root) == (
        "hardware/Dev_A/vllm/vllm is a symlink; patchtool reads plain files and folders only"
    )

    root = tmp_path / "linked-device"
    (root / "hardware").mkdir(parents=True)
    (root / "hardware/Dev_A").symlink_to(tmp_path / "linked-folder/hardware/Dev_A")
    assert refusal(UnsafeInputError, ExitCode.UNSAFE, root) == (
        "hardware/Dev_A is a symlink; patchtool reads plain files and folders only"
    )

    root = tmp_path / "linked-hardware"
    root.mkdir()
    (root / "hardware").symlink_to(tmp_path / "linked-folder/hardware")
    assert refusal(UnsafeInputError, ExitCode.UNSAFE, root) == (
        "hardware is a symlink; patchtool reads plain files and folders only"
    )

    root = write(tmp_path / "fifo", {"hardware/Dev_A/vllm/diff.yaml": diff_yaml("Dev_A", "vllm")})
    os.mkfifo(root / "hardware/Dev_A/vllm/setup.py.patch")
    assert refusal(UnsafeInputError, ExitCode.UNSAFE, root) == (
        "hardware/Dev_A/vllm/setup.py.patch is not a regular file"
    )


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("commit: [unclosed\n", "hardware/Dev_A/vllm/diff.yaml: not valid YAML: "),
        (
            diff_yaml("Dev_A", "vllm", extra="modles: []\n"),
            "hardware/Dev_A/vllm/diff.yaml: unknown key 'modles'; did you mean 'models'?",
        ),
        (
            diff_yaml("Dev_A", "vllm", commit="ba41cc9"),
            "hardware/Dev_A/vllm/diff.yaml: backends_commit.vllm 'ba41cc9' is not a full 40-digit commit id",
        ),
        (
            diff_yaml("Dev_A", "vllm", version="0.10"),
            "hardware/Dev_A/vllm/diff.yaml: backends_version.vllm is a number (0.1), not text",
        ),
        (
            "- a list\n",
            "hardware/Dev_A/vllm/diff.yaml: expected a mapping of backends_commit, "
            "backends_version, commit, contact, device_type, models, task",
        ),
        (
            diff_yaml("Dev_A", "vllm").replace("- qwen3", '- "qwen\\e[31m"'),
            "hardware/Dev_A/vllm/diff.yaml: models 'qwen\\x1b[31m' holds the control character U+001B",
        ),
        (
            diff_yaml("Dev_A", "vllm").replace(f"commit: {FS_COMMIT}\n", ""),
            "hardware/Dev_A/vllm/diff.yaml: has no commit (FlagScale's base commit)",
        ),
    ],
    ids=[
        "syntax",
        "unknown-key",
        "short-commit",
        "float-version",
        "not-a-mapping",
        "escape",
        "no-commit",
    ],
)
def test_malformed_diff_yaml_is_refused(tmp_path: Path, yaml_text: str, message: str) -> None:
    write(tmp_path, {
        "hardware/Dev_A/vllm/diff.yaml": yaml_text,
        "hardware/Dev_A/vllm/diff.patch": modify("setup.py"),
    })  # fmt: skip
    got = refusal(IntegrityError, ExitCode.INTEGRITY, tmp_path)
    assert got.startswith(message) if message.endswith(": ") else got == message


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            modify("setup.py").replace("@@ -1,2 +1,2 @@", "@@ -1,3 +1,3 @@"),
            ", line 5: the hunk is cut short by the end",
        ),
        (
            modify("setup.py") + "stray words\n" + modify("vllm/envs.py"),
            ", line 9: text after the diff of setup.py that belongs to no file's diff",
        ),
        ("notes first\n" + modify("setup.py"), ", line 1: text before the first 'diff --git' line"),
        (
            modify("setup.py").replace("@@ -1,2 +1,2 @@", "@@ -1,x +1,2 @@"),
            ", line 5: a malformed hunk header",
        ),
        ("just text\n", ", line 1: text before the first 'diff --git' line"),
        (modify("setup.py").replace("\n", "\r\n"), ", line 1: the diff has CRLF line ends"),
        (
            b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-\xe9\n+e\n",
            ": is not UTF-8 text (byte 48)",
        ),
        (
            "diff --git a/x b/y\n--- a/x\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n",
            ", line 1: names two files ('x', 'y') without a rename",
        ),
        (
            "diff --git a/ok.py b/ok.py\nrename from ok.py\nrename to ../evil.py\n",
            ", line 1: the header names 'ok.py' here and '../evil.py' there",
        ),
    ],
    ids=[
        "cut-short",
        "garbage-between",
        "preamble",
        "bad-hunk",
        "not-a-diff",
        "crlf",
        "latin1",
        "two-names",
        "rename-mismatch",
    ],
)
def test_malformed_patch_is_refused(tmp_path: Path, patch: str | bytes, message: str) -> None:
    squashed_tree(tmp_path, patch)
    got = refusal(IntegrityError, ExitCode.INTEGRITY, tmp_path)
    assert got == f"hardware/Metax_C550/vllm/diff.patch{message}"


def test_malformed_patch_history_is_refused(tmp_path: Path) -> None:
    squashed_tree(tmp_path, modify("setup.py"))
    write(
        tmp_path,
        {"hardware/patch_history.yaml": "Metax_C550:\n  inference:\n    vllm:\n    - abc\n"},
    )
    assert refusal(IntegrityError, ExitCode.INTEGRITY, tmp_path) == (
        "hardware/patch_history.yaml: Metax_C550.inference.vllm 'abc' is not a full 40-digit "
        "commit id"
    )


def test_missing_root_hardware_folder_and_diff_yaml(tmp_path: Path) -> None:
    assert refusal(NotFoundError, ExitCode.NOT_FOUND, tmp_path / "nowhere") == (
        f"{tmp_path / 'nowhere'} does not exist"
    )
    (tmp_path / "empty").mkdir()
    assert refusal(NotFoundError, ExitCode.NOT_FOUND, tmp_path / "empty") == (
        f"{tmp_path / 'empty'} holds no hardware/ folder"
    )
    write(tmp_path / "older", {
        "hardware/Metax_C550/FlagScale/b9624ac.patch": modify("setup.py"),
        "hardware/Metax_C550/FlagScale/b9624ac.yaml": "task:\n- inference\n",
    })  # fmt: skip
    assert refusal(IntegrityError, ExitCode.INTEGRITY, tmp_path / "older") == (
        "hardware/Metax_C550/FlagScale has no diff.yaml (it holds b9624ac.yaml: an older layout "
        "patchtool does not read)"
    )


# --------------------------------------------------------------------------- filters and plan


@pytest.fixture
def two_devices(tmp_path: Path) -> Path:
    return write(tmp_path / "FlagScale", {
        "hardware/patch_history.yaml": (
            "Metax_C550:\n  inference:\n    FlagScale+vllm:\n"
            + "".join(f"    - {c}\n" for c in HISTORY_COMMITS)
            + "    vllm:\n" + "".join(f"    - {c}\n" for c in HISTORY_COMMITS)
        ),
        "hardware/README.md": "FlagScale's hardware patches\n",
        "hardware/Metax_C550/vllm/diff.yaml": diff_yaml("Metax_C550", "vllm", version="v0.8.5"),
        "hardware/Metax_C550/vllm/diff.patch": modify("vllm/worker/worker.py") + modify("setup.py"),
        "hardware/Metax_C550/vllm/notes.txt": "not a patch\n",
        "hardware/Metax_C550/Megatron-LM/diff.yaml": (
            diff_yaml("Metax_C550", "Megatron-LM", version="core_r0.13.0", commit=MEGATRON_COMMIT)
            .replace("- inference", "- train")
        ),
        "hardware/Metax_C550/Megatron-LM/megatron/core/fusions/fused_bias.py.patch": modify(
            "megatron/core/fusions/fused_bias.py"),
        "hardware/Kunlunxin_R310p/vllm/diff.yaml": diff_yaml(
            "Kunlunxin_R310p", "vllm", version="0.9.1", commit=None, contact="not an address"),
        "hardware/Kunlunxin_R310p/vllm/csrc/kunlun.cu.patch": create("csrc/kunlun.cu"),
    })  # fmt: skip


def test_dry_run_plan_lines(two_devices: Path) -> None:
    assert render_plan(read_flagscale(two_devices)) == [
        "hardware/Kunlunxin_R310p/vllm: device Kunlunxin_R310p, backend vllm, layout per-file",
        "  base: vllm 0.9.1 (no commit recorded)",
        f"  FlagScale commit: {FS_COMMIT}",
        f"  author: {PLACEHOLDER_AUTHOR}, date {PLACEHOLDER_DATE}",
        "  patch 1/1: csrc: Kunlunxin_R310p changes from FlagScale (1 file)",
        "    csrc/kunlun.cu",
        "  note: diff.yaml contact 'not an address' is not an address: the author is the "
        f"placeholder {PLACEHOLDER_AUTHOR}",
        f"  note: date is the placeholder {PLACEHOLDER_DATE}: FlagScale records no date outside git",
        "hardware/Metax_C550/Megatron-LM: device metax_C550, backend Megatron-LM, layout per-file",
        f"  base: Megatron-LM at {MEGATRON_COMMIT}",
        f"  FlagScale commit: {FS_COMMIT}",
        f"  author: {PLACEHOLDER_AUTHOR}, date {PLACEHOLDER_DATE}",
        "  patch 1/1: core: metax_C550 changes from FlagScale (1 file)",
        "    megatron/core/fusions/fused_bias.py",
        "  note: FlagScale's Metax_C550 is patchtool's device metax_C550",
        "  note: Megatron-LM version 'core_r0.13.0' in diff.yaml is not a release (a branch?); "
        "the base must be a commit",
        "  note: Megatron-LM has no released sdist patchtool fetches: its base is taken from git "
        f"(commit {MEGATRON_COMMIT})",
        f"  note: diff.yaml names no contact: the author is the placeholder {PLACEHOLDER_AUTHOR}",
        f"  note: date is the placeholder {PLACEHOLDER_DATE}: FlagScale records no date outside git",
        "hardware/Metax_C550/vllm: device metax_C550, backend vllm, layout diff",
        f"  base: vllm 0.8.5 at {VLLM_COMMIT}",
        f"  FlagScale commit: {FS_COMMIT} (newest in patch_history.yaml: {HISTORY_COMMITS[-1]})",
        f"  author: {PLACEHOLDER_AUTHOR}, date {PLACEHOLDER_DATE}",
        "  patch 1/2: setup.py: metax_C550 changes from FlagScale (1 file)",
        "    setup.py",
        "  patch 2/2: worker: metax_C550 changes from FlagScale (1 file)",
        "    vllm/worker/worker.py",
        "  skipped: hardware/Metax_C550/vllm/notes.txt: not a patch; FlagScale does not apply it "
        "either",
        "  note: FlagScale's Metax_C550 is patchtool's device metax_C550",
        "  note: vllm version 'v0.8.5' in diff.yaml is read as 0.8.5",
        f"  note: diff.yaml names vllm 0.8.5 and commit {VLLM_COMMIT}: the patch was made on that "
        "commit, which need not be the 0.8.5 release",
        "  note: patch_history.yaml lists 2 commit(s) under Metax_C550/inference/vllm; the newest "
        "carries this patch",
        f"  note: diff.yaml names no contact: the author is the placeholder {PLACEHOLDER_AUTHOR}",
        f"  note: date is the placeholder {PLACEHOLDER_DATE}: FlagScale records no date outside git "
        f"(git dates FlagScale commit {HISTORY_COMMITS[-1]}, which brought it)",
        "4 patch(es), 4 files, 1 skipped, from 3 FlagScale folder(s) of 2 device(s): "
        "Kunlunxin_R310p, metax_C550",
    ]


def test_device_and_backend_filters(two_devices: Path) -> None:
    def chosen(**options: str) -> list[tuple[str, str]]:
        return [(s.flagscale_device, s.backend) for s in read_flagscale(two_devices, **options)]  # type: ignore[arg-type]

    assert chosen(device="Metax_C550") == [("Metax_C550", "Megatron-LM"), ("Metax_C550", "vllm")]
    assert chosen(device="metax_C550") == chosen(device="Metax_C550")  # patchtool's name
    assert chosen(device="kunlunxin_r310p") == [("Kunlunxin_R310p", "vllm")]
    assert chosen(backend="vllm") == [("Kunlunxin_R310p", "vllm"), ("Metax_C550", "vllm")]
    assert chosen(device="Metax_C550", backend="megatron") == [("Metax_C550", "Megatron-LM")]

    message = refusal(NotFoundError, ExitCode.NOT_FOUND, two_devices, device="Metax_C500")
    assert message == "no device 'Metax_C500' in hardware/; did you mean 'Metax_C550'?"
    with pytest.raises(NotFoundError) as caught:
        read_flagscale(two_devices, device="Metax_C500")
    assert caught.value.hint == "Devices there: Kunlunxin_R310p, Metax_C550."
    message = refusal(NotFoundError, ExitCode.NOT_FOUND, two_devices, device="Kunlunxin_R310p",
                      backend="sglang")  # fmt: skip
    assert message == "no backend 'sglang' under hardware/Kunlunxin_R310p"


def test_filters_pass_over_folders_they_do_not_select(two_devices: Path) -> None:
    # A broken folder elsewhere does not stop reading the one asked for.
    write(two_devices, {"hardware/Broken_X/vllm/diff.yaml": "commit: [\n"})
    assert [s.device for s in read_flagscale(two_devices, device="Kunlunxin_R310p")] == [
        "Kunlunxin_R310p"
    ]
    refusal(IntegrityError, ExitCode.INTEGRITY, two_devices)


def test_encrypted_legacy_patch_reads_like_the_plain_one(
    tmp_path: Path, vendor_key: rsa.RSAPrivateKey
) -> None:
    keys = key_folder(tmp_path / "keys", vendor_key)
    plain = read_one(
        write(tmp_path / "plain", {"hardware/CZ_A100/085811f4/085811f4.patch": LEGACY_MAIL})
    )
    root = write(tmp_path / "FlagScale", {
        "hardware/CZ_A100/085811f4/085811f4.patch.encrypted": encrypt(LEGACY_MAIL.encode(), vendor_key),
    })  # fmt: skip
    without = read_one(root)
    assert (without.groups, without.skipped) == ((), (
        "hardware/CZ_A100/085811f4/085811f4.patch.encrypted: encrypted; pass the vendor's "
        "private key to read it",
    ))  # fmt: skip
    found = read_one(root, private_key=keys)
    assert (found.author, found.date) == (plain.author, plain.date)
    assert [g.diff() for g in found.groups] == [g.diff() for g in plain.groups]
    assert len(found.skipped) == 3
