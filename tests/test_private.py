"""Private patches (privacy.py): encrypted with age to device.toml's recipients,
decrypted in memory by unpatch, check, rebase and build-wheel, re-exported
without churn, refused when changed, cut short or opened with the wrong key, and
never written in clear into the store, the cache or the temporary folder."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest
from helpers import (
    DEMO_FILES,
    CliResult,
    SyntheticUpstream,
    check_records,
    commit_all,
    git,
    make_sdist,
    run_cli,
)

MARKER = "PRIVATE-MARKER-c550-decode-path"
PRIVATE_BODY = (
    "Keeps the decode path private until the hardware is announced.\n\n"
    "Upstream-Status: Inappropriate [not yet announced]\nPatchtool-Private: yes"
)


@dataclass
class PrivateWorld:
    world: SyntheticUpstream
    identity: Path  # the recipient "ci"'s key
    tmp: Path  # TMPDIR of every command

    def cli(self, *args: str, identity: Path | None = None, **env: str) -> CliResult:
        environment = {"TMPDIR": str(self.tmp), **env}
        if identity is not None:
            environment["PATCHTOOL_IDENTITY"] = str(identity)
        return run_cli("--store", str(self.world.store), *args, env=environment)

    @property
    def base(self) -> Path:
        return self.world.base_folder

    @property
    def tree(self) -> Path:
        return self.world.tree


def new_identity(folder: Path, name: str) -> tuple[Path, str]:
    identity = pyrage.x25519.Identity.generate()
    path = folder / f"{name}.key"
    path.write_text(f"# {name}\n{identity}\n")
    return path, str(identity.to_public())


def set_recipients(world: SyntheticUpstream, recipients: dict[str, str]) -> None:
    device = world.store / "devA" / "device.toml"
    text = device.read_text().split("\n[private.recipients]")[0]
    lines = "".join(f'{name} = "{key}"\n' for name, key in recipients.items())
    device.write_text(f"{text}\n[private.recipients]\n{lines}")


@pytest.fixture
def private(upstream: SyntheticUpstream, tmp_path: Path) -> PrivateWorld:
    """devA with one recipient ("ci") and a series of three patches, the middle
    one private: a.patch, a private decode path, c.patch."""
    keys = tmp_path / "keys"
    keys.mkdir()
    identity, public = new_identity(keys, "ci")
    set_recipients(upstream, {"ci": public})
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    world = PrivateWorld(upstream, identity, temporary)
    assert world.cli("unpatch", "-d", "devA", "--dir", str(upstream.build)).code == 0
    core = world.tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 1\n", "return 'one'\n"))
    commit_all(world.tree, "Return words from function_1")
    core.write_text(core.read_text().replace("return 20\n", f"return '{MARKER}'\n"))
    (world.tree / "demo" / "decode.py").write_text(f"PATH = '{MARKER}'\n")
    commit_all(world.tree, "Add the decode path", PRIVATE_BODY)
    core.write_text(core.read_text().replace("return 3\n", "return 'three'\n"))
    commit_all(world.tree, "Return words from function_3")
    exported = world.cli("patch", "-d", "devA", "--dir", str(upstream.build))
    assert exported.code == 0, exported.output
    return world


def store_files(world: PrivateWorld) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(world.base.iterdir()) if p.is_file()}


def plaintext_places(world: PrivateWorld) -> list[str]:
    """Every file under the store, the cache and the temporary folder that holds
    the marker, git objects of the cache decompressed."""
    found = []
    cache = world.world.root.parent / "home" / "patchtool-cache"
    roots = [world.world.store, world.tmp, *(p for p in [cache] if p.exists())]
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and MARKER.encode() in path.read_bytes():
                found.append(str(path))
    for repository in (p for p in cache.rglob("*.git") if p.is_dir()) if cache.exists() else []:
        objects = subprocess.run(
            ["git", "cat-file", "--batch-all-objects", "--batch"],
            cwd=repository, capture_output=True, check=True,
        ).stdout
        if MARKER.encode() in objects:
            found.append(str(repository))
    return found


# --------------------------------------------------------------------------- the round trip


def test_a_commit_with_the_trailer_is_stored_encrypted_with_a_clear_header(
    private: PrivateWorld,
) -> None:
    files = store_files(private)
    assert sorted(files) == [
        "add-the-decode-path.patch.age",
        "base.toml",
        "return-words-from-function-1.patch",
        "return-words-from-function-3.patch",
        "series",
    ]
    assert files["series"].decode().splitlines()[1:] == [
        "return-words-from-function-1.patch",
        "add-the-decode-path.patch.age",
        "return-words-from-function-3.patch",
    ]
    stored = files["add-the-decode-path.patch.age"].decode()
    header = stored.split("-----BEGIN AGE ENCRYPTED FILE-----")[0]
    assert header.splitlines()[2:] == [
        'subject = "Add the decode path"',
        "files = [",
        '    "demo/core.py",',
        '    "demo/decode.py",',
        "]",
        "recipients = [",
        '    "ci",',
        "]",
        "",
    ]
    assert stored.endswith("-----END AGE ENCRYPTED FILE-----\n")
    assert plaintext_places(private) == []
    # The age file is an age file: the age format's own reader opens it.
    armored = stored[len(header):].encode()
    identity = pyrage.x25519.Identity.from_str(private.identity.read_text().splitlines()[1])
    assert MARKER.encode() in pyrage.decrypt(armored, [identity])


def test_unpatch_decrypts_and_an_unchanged_reexport_keeps_every_byte(
    private: PrivateWorld,
) -> None:
    before = store_files(private)
    build = str(private.world.build)
    made = private.cli("unpatch", "-d", "devA", "--dir", build, "--force",
                       identity=private.identity)
    assert made.code == 0, made.output
    assert MARKER in (private.tree / "demo" / "decode.py").read_text()
    assert git(private.tree, "log", "-1", "--format=%s", "HEAD~1").strip() == "Add the decode path"
    again = private.cli("patch", "-d", "devA", "--dir", build)
    assert again.code == 0, again.output
    assert "store unchanged: 3 patch(es)" in again.stderr
    assert store_files(private) == before
    # A change to the private patch re-encrypts that file alone.
    decode = private.tree / "demo" / "decode.py"
    decode.write_text(decode.read_text() + "EXTRA = 1\n")
    git(private.tree, "add", "--all")
    git(private.tree, "commit", "--quiet", "--fixup", "HEAD~1")
    env = {"GIT_SEQUENCE_EDITOR": "true"}
    subprocess.run(["git", "rebase", "--quiet", "-i", "--autosquash", "patchtool/base"],
                   cwd=private.tree, check=True, env={**__import__("os").environ, **env})
    changed = private.cli("patch", "-d", "devA", "--dir", build)
    assert changed.code == 0, changed.output
    after = store_files(private)
    assert [n for n in after if after[n] != before[n]] == ["add-the-decode-path.patch.age"]
    assert plaintext_places(private) == []


def test_no_command_leaves_the_plaintext_in_the_store_cache_or_temporary_folder(
    private: PrivateWorld,
) -> None:
    build = str(private.world.build)
    key = private.identity
    for args in (
        ("unpatch", "-d", "devA", "--dir", build, "--force"),
        ("patch", "-d", "devA", "--dir", build),
        ("patch", "-d", "devA", "--dir", build, "--check"),
        ("check", "-d", "devA"),
        ("status", "-d", "devA", "--dir", build),
    ):
        result = private.cli(*args, identity=key)
        assert result.code == 0, (args, result.output)
        assert MARKER not in result.output, args
    assert plaintext_places(private) == []


# --------------------------------------------------------------------------- without the key


def test_without_a_key_unpatch_names_the_private_patches_and_builds_nothing(
    private: PrivateWorld,
) -> None:
    build = private.world.build
    before = git(private.tree, "rev-parse", "HEAD")
    result = private.cli("unpatch", "-d", "devA", "--dir", str(build), "--force")
    assert result.code == 3, result.output
    assert result.stderr.splitlines()[-2:] == [
        "error: devA/demo-1.0: 1 private patch(es) need a key to read and were not applied: "
        "add-the-decode-path.patch.age",
        "hint: Name your age identity with --identity FILE or PATCHTOOL_IDENTITY, or pass "
        "--public-only to use the public patches only (`patchtool patch -d devA` refuses to "
        "export from such a tree).",
    ]
    assert git(private.tree, "rev-parse", "HEAD") == before
    assert sorted(p.name for p in (build / "devA").iterdir()) == [".patchtool.lock", "demo"]


def test_public_only_builds_the_public_part_and_patch_refuses_to_export_it(
    private: PrivateWorld,
) -> None:
    build = str(private.world.build)
    before = store_files(private)
    result = private.cli("unpatch", "-d", "devA", "--dir", build, "--force", "--public-only")
    assert result.code == 0, result.output
    assert ("warning: left out 1 private patch(es), as --public-only asks: "
            "add-the-decode-path.patch.age") in result.stderr
    subjects = git(private.tree, "log", "--format=%s", "patchtool/base..HEAD").splitlines()
    assert subjects == ["Return words from function_3", "Return words from function_1"]
    assert not (private.tree / "demo" / "decode.py").exists()
    refused = private.cli("patch", "-d", "devA", "--dir", build)
    assert refused.code == 5, refused.output
    assert refused.stderr.splitlines()[0] == (
        f"error: the build tree {private.tree} was made with --public-only: it lacks the "
        "private patches add-the-decode-path.patch.age, and exporting it would remove them "
        "from the store"
    )
    assert store_files(private) == before


def test_check_without_a_key_fails_with_exit_3_and_public_only_passes(
    private: PrivateWorld,
) -> None:
    without = private.cli("check", "-d", "devA", "--json")
    assert without.code == 3, without.output
    records = {r["check"]: r for r in check_records(without.stdout) if r["base"] == "demo-1.0"}
    assert records["series"]["ok"] is False
    assert records["series"]["details"] == [
        "devA/demo-1.0: 1 private patch(es) need a key to read and were not applied: "
        "add-the-decode-path.patch.age"
    ]
    assert records["apply"]["details"] == ["not run: its patches cannot be read"]
    assert records["lint"]["ok"] is True
    public = private.cli("check", "-d", "devA", "--json", "--public-only")
    assert public.code == 0, public.output
    records = {r["check"]: r for r in check_records(public.stdout) if r["base"] == "demo-1.0"}
    assert records["series"]["details"] == [
        "public part only: left out the private patch add-the-decode-path.patch.age"
    ]
    assert records["apply"]["ok"] is True
    assert records["export"]["skipped"] is True
    full = private.cli("check", "-d", "devA", "--json", identity=private.identity)
    assert full.code == 0, full.output
    assert all(r["ok"] for r in check_records(full.stdout))


# --------------------------------------------------------------------------- damage and keys


def _flip_payload(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    end = lines.index(b"-----END AGE ENCRYPTED FILE-----")
    target = end - 1  # the last base64 line: payload, never the header
    line = bytearray(lines[target])
    line[0] = ord("A") if line[0] != ord("A") else ord("B")
    lines[target] = bytes(line)
    path.write_bytes(b"\n".join(lines))


def _truncate(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    end = lines.index(b"-----END AGE ENCRYPTED FILE-----")
    del lines[end - 1]
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("damage", [_flip_payload, _truncate], ids=["flipped", "truncated"])
def test_a_changed_or_cut_short_file_is_refused_with_exit_6(
    private: PrivateWorld, damage: object
) -> None:
    stored = private.base / "add-the-decode-path.patch.age"
    # A file long enough to have a payload line after the header.
    assert stored.read_bytes().count(b"\n") > 12
    damage(stored)  # type: ignore[operator]
    build = str(private.world.build)
    result = private.cli("unpatch", "-d", "devA", "--dir", build, "--force",
                         identity=private.identity)
    assert result.code == 6, result.output
    error = result.stderr.splitlines()[-2]
    assert error.startswith(
        f"error: {stored}: cannot be decrypted: the file was changed or cut short (age: "
    ), error
    check = private.cli("check", "-d", "devA", identity=private.identity)
    assert check.code == 6, check.output


def test_a_changed_header_stanza_is_called_tampering_when_the_key_is_a_recipient(
    private: PrivateWorld,
) -> None:
    stored = private.base / "add-the-decode-path.patch.age"
    text = stored.read_bytes()
    head, armor = text.split(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    body = base64.b64decode(b"".join(armor.split(b"\n")[:-2]))
    # One character of the X25519 stanza's ephemeral share, changed to another
    # valid one: the header still parses, the key no longer unwraps.
    position = body.index(b"-> X25519 ") + 20
    swapped = b"A" if body[position:position + 1] != b"A" else b"B"
    body = body[:position] + swapped + body[position + 1:]
    encoded = base64.b64encode(body)
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    stored.write_bytes(head + b"-----BEGIN AGE ENCRYPTED FILE-----\n" + b"\n".join(lines)
                       + b"\n-----END AGE ENCRYPTED FILE-----\n")
    result = private.cli("unpatch", "-d", "devA", "--dir", str(private.world.build), "--force",
                         identity=private.identity)
    assert result.code == 6, result.output
    assert result.stderr.splitlines()[-2] == (
        f"error: {stored}: cannot be decrypted, although it names 'ci' (whose key is in "
        f"{private.identity}) as a recipient: the file was changed"
    )


def test_a_wrong_key_is_exit_3_and_names_the_recipients(
    private: PrivateWorld, tmp_path: Path
) -> None:
    stranger, _ = new_identity(tmp_path, "stranger")
    stored = private.base / "add-the-decode-path.patch.age"
    result = private.cli("unpatch", "-d", "devA", "--dir", str(private.world.build), "--force",
                         "--identity", str(stranger))
    assert result.code == 3, result.output
    assert result.stderr.splitlines()[-2:] == [
        f"error: {stored}: no identity in {stranger} opens it (its header names the "
        "recipients ci)",
        "hint: Use the identity of one of its recipients, or ask one of them to add your "
        "public key to [private.recipients] in device.toml and run `patchtool patch`.",
    ]


def test_a_missing_identity_file_is_exit_3(private: PrivateWorld, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.key"
    result = private.cli("unpatch", "-d", "devA", "--dir", str(private.world.build), "--force",
                         "--identity", str(missing))
    assert result.code == 3, result.output
    assert f"error: identity file {missing} does not exist" in result.stderr.splitlines()


def test_a_header_that_lies_about_the_patch_is_refused(private: PrivateWorld) -> None:
    stored = private.base / "add-the-decode-path.patch.age"
    stored.write_bytes(stored.read_bytes().replace(
        b'subject = "Add the decode path"', b'subject = "Fix a typo in the docs"'))
    result = private.cli("unpatch", "-d", "devA", "--dir", str(private.world.build), "--force",
                         identity=private.identity)
    assert result.code == 6, result.output
    assert result.stderr.splitlines()[-2] == (
        f"error: patch {stored} (series line 3): the clear header does not match the "
        "encrypted patch (its subject differ): a reviewer would read something else than "
        "what is applied"
    )


# --------------------------------------------------------------------------- recipients


def test_reencrypt_encrypts_every_private_patch_anew(private: PrivateWorld) -> None:
    """--reencrypt seals anew even a patch whose recipients are device.toml's (a
    recipient's key changed under the same name); without it the file stays. A
    recipient added or removed is taken up by plain `patch`: see test_rules.py."""
    build = str(private.world.build)
    before = store_files(private)
    unchanged = private.cli("patch", "-d", "devA", "--dir", build)
    assert unchanged.code == 0 and store_files(private) == before
    again = private.cli("patch", "-d", "devA", "--dir", build, "--reencrypt")
    assert again.code == 0, again.output
    after = store_files(private)
    assert [n for n in after if after[n] != before[n]] == ["add-the-decode-path.patch.age"]
    assert private.cli("check", "-d", "devA", identity=private.identity).code == 0


def test_a_private_change_that_lost_its_trailer_is_not_exported_in_clear(
    private: PrivateWorld,
) -> None:
    build = str(private.world.build)
    assert private.cli("unpatch", "-d", "devA", "--dir", build, "--force",
                       identity=private.identity).code == 0
    before = store_files(private)
    # Reword the private commit (the middle one) without its trailer.
    git(private.tree, "checkout", "--quiet", "-B", "work", "HEAD~1")
    git(private.tree, "commit", "--quiet", "--amend", "-m", "Add a decode path",
        "-m", "Reworded.\n\nUpstream-Status: Pending")
    git(private.tree, "cherry-pick", "--quiet", "devA")
    git(private.tree, "checkout", "--quiet", "-B", "devA", "work")
    refused = private.cli("patch", "-d", "devA", "--dir", build)
    assert refused.code == 2, refused.output
    commit = git(private.tree, "rev-parse", "HEAD~1").strip()[:10]
    assert [line for line in refused.stderr.splitlines() if line.startswith("error:")] == [
        "error: these commits carry the change of a private patch but no `Patchtool-Private: "
        f"yes` trailer, so they would be exported in clear: {commit} Add a decode path"
    ]
    assert store_files(private) == before
    published = private.cli("patch", "-d", "devA", "--dir", build, "--publish")
    assert published.code == 0, published.output
    assert "add-a-decode-path.patch" in store_files(private)
    assert "add-the-decode-path.patch.age" not in store_files(private)


# --------------------------------------------------------------------------- the wheel


def test_the_wheel_provenance_names_a_private_patch_by_hash_only(private: PrivateWorld) -> None:
    build = str(private.world.build)
    assert private.cli("unpatch", "-d", "devA", "--dir", build, "--force",
                       identity=private.identity).code == 0
    (private.tree / "env.sh").write_text("export DEMO=1\n")
    commit_all(private.tree, "Add env.sh")
    assert private.cli("patch", "-d", "devA", "--dir", build).code == 0
    result = private.cli("build-wheel", "-d", "devA", "--dir", build)
    assert result.code == 0, result.output
    with zipfile.ZipFile(result.stdout.strip()) as archive:
        provenance = json.loads(archive.read("demo-1.0.dist-info/patchtool-provenance.json"))
    stored = private.base / "add-the-decode-path.patch.age"
    digest = __import__("hashlib").sha256(stored.read_bytes()).hexdigest()
    assert provenance["patches"][1] == {"private": True, "sha256": digest}
    assert [sorted(p) for p in provenance["patches"]] == [
        ["name", "sha256"], ["private", "sha256"], ["name", "sha256"], ["name", "sha256"]
    ]
    assert "decode" not in json.dumps(provenance)
    assert provenance["tree_state"] == "exported"


# --------------------------------------------------------------------------- rebase


def test_rebase_carries_a_private_patch_and_its_report_shows_no_private_line(
    private: PrivateWorld,
) -> None:
    files = dict(DEMO_FILES)
    core = files["demo/core.py"]
    assert isinstance(core, bytes)
    # Upstream 1.1 changes a line next to the private change: it needs a 3-way merge,
    # so the range-diff would show its lines.
    files["demo/core.py"] = core.replace(b"return 21\n", b"return 21  # upstream 1.1\n")
    make_sdist(private.world.sdist.parent / "demo-1.1.tar.gz", "demo-1.1", files,
               modes={"tools/run.sh": 0o755})
    build = str(private.world.build)
    without = private.cli("rebase", "-d", "devA", "--dir", build, "--onto", "1.1")
    assert without.code == 3, without.output
    assert not (private.world.store / "devA" / "demo-1.1").exists()
    result = private.cli("rebase", "-d", "devA", "--dir", build, "--onto", "1.1",
                         identity=private.identity)
    assert result.code == 0, result.output
    folder = private.world.store / "devA" / "demo-1.1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "add-the-decode-path.patch.age",
        "base.toml",
        "rebase-report.md",
        "return-words-from-function-1.patch",
        "return-words-from-function-3.patch",
        "series",
    ]
    report = (folder / "rebase-report.md").read_text()
    assert "| 2 | add-the-decode-path.patch.age | 3-way | add-the-decode-path.patch.age |" \
        in report
    assert "    (a private patch: its changes are not shown)" in report.splitlines()
    assert "decode" not in report.split("## Range-diff")[1].split("Add the decode path")[1]
    assert plaintext_places(private) == []
    assert private.cli("check", "-d", "devA", "-c", "1.1", identity=private.identity).code == 0
    # The tree's record knows the new private file: nothing is unexported.
    status = private.cli("patch", "-d", "devA", "--dir", build)
    assert status.code == 0, status.output
    assert "store unchanged: 3 patch(es)" in status.stderr


def test_a_public_patch_that_shows_private_lines_as_context_is_warned_about(
    private: PrivateWorld,
) -> None:
    build = str(private.world.build)
    core = private.tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 21\n", "return 'twenty-one'\n"))
    commit_all(private.tree, "Return words from function_21")
    result = private.cli("patch", "-d", "devA", "--dir", build)
    assert result.code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        "warning: return-words-from-function-21.patch shows in clear 1 line(s) that the "
        "private patch(es) add-the-decode-path.patch.age add (as its context): keep the "
        "public change away from them, or make it private too"
    ]


def test_an_ssh_key_is_a_recipient_and_an_identity(private: PrivateWorld, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    ssh_private = tmp_path / "id_ed25519"
    ssh_private.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    ssh_public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    ci_public = re.search(r'ci = "(age1[^"]+)"',
                          (private.world.store / "devA" / "device.toml").read_text())
    assert ci_public is not None
    set_recipients(private.world, {"ci": ci_public[1], "alice": f"{ssh_public} alice@laptop"})
    build = str(private.world.build)
    assert private.cli("patch", "-d", "devA", "--dir", build, "--reencrypt").code == 0
    made = private.cli("unpatch", "-d", "devA", "--dir", build, "--force",
                       "--identity", str(ssh_private))
    assert made.code == 0, made.output
    assert MARKER in (private.tree / "demo" / "decode.py").read_text()
