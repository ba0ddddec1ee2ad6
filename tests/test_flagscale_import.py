"""`import --flagscale`: FlagScale hardware/ trees (made here, in FlagScale's
layouts) into the store, through the same import as everyday patches; the
summary table; all-or-nothing per device and base; the fallback to a release."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import REPOSITORY, RealVllm, git, make_sdist, run_cli, snapshot
from test_flagscale import FS_COMMIT, diff_yaml, encrypt, key_folder, modify, write

ORIGINAL = {
    "vllm/envs.py": "first line\nold 0\n",
    "vllm/utils.py": "first line\nold 1\n",
    "vllm/model_executor/fused_moe.py": "first line\nold 2\n",
    "csrc/moe.cu": "first line\nold 3\n",
    "setup.py": "first line\nold 4\n",
}


def source_repository(where: Path) -> str:
    """A small stand-in for the backend's repository; returns its commit."""
    where.mkdir(parents=True)
    git(where, "init", "--quiet")
    for path, text in ORIGINAL.items():
        (where / path).parent.mkdir(parents=True, exist_ok=True)
        (where / path).write_text(text)
    git(where, "add", "--all")
    git(where, "commit", "--quiet", "-m", "upstream")
    return git(where, "rev-parse", "HEAD").strip()


def per_file(device: str, commit: str, changed: dict[str, int], version: str = "0.8.5",
             contact: str = "dev@metax-tech.com") -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {
        f"hardware/{device}/vllm/diff.yaml": diff_yaml(device, "vllm", version, commit, contact)
    }
    for path, number in changed.items():
        files[f"hardware/{device}/vllm/{path}.patch"] = modify(path, number) + "\n"
    return files


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.project = root / "project"
        (self.project / "patches").mkdir(parents=True)
        self.store = self.project / "patches"
        self.build = self.project / "build"
        self.repository = root / "vllm-src"
        self.commit = source_repository(self.repository)
        self.flagscale = root / "FlagScale"

    def run(self, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return run_cli("import", "--flagscale", str(self.flagscale), *args, cwd=self.project,
                       env=env)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


ALL_FIVE = {path: number for number, path in enumerate(ORIGINAL)}


def test_a_flagscale_tree_becomes_a_device_and_base_that_unpatches(world: World) -> None:
    write(world.flagscale, per_file("Metax_C550", world.commit, ALL_FIVE))
    result = world.run("--git-url", f"vllm={world.repository}")
    assert result.code == 0, result.output
    assert result.stdout.splitlines() == [
        "device      backend  base        files  patches  clean  3-way  failed",
        "metax_C550  vllm     vllm-0.8.5  5      4        5      0      0",
    ]
    base = world.store / "metax_C550" / "vllm-0.8.5"
    assert (base / "base.toml").read_text() == (
        f'project = "vllm"\nversion = "0.8.5"\ncommit = "{world.commit}"\n\n'
        '[source]\ntype = "git"\nurl = "https://github.com/vllm-project/vllm.git"\n\n'
        '[origin]\nsource = "FlagScale hardware/Metax_C550/vllm"\n'
        f'commit = "{FS_COMMIT}"\ncontact = "dev@metax-tech.com"\n'
        'models = [\n    "deepseek_r1",\n    "qwen3",\n]\ntask = [\n    "inference",\n]\n'
    )
    assert (base / "series").read_text().splitlines()[1:] == [
        "change-csrc-moe-cu.patch",
        "change-setup-py.patch",
        "change-2-files-in-vllm.patch",
        "change-vllm-model-executor-fused-moe-py.patch",
    ]
    assert (world.store / "metax_C550" / "device.toml").read_text() == (
        'display-name = "Metax_C550"\nvendor = "MetaX"\n'
    )
    # The store it wrote passes check (lint included) and unpatches.
    checked = run_cli("check", "--offline", cwd=world.project)
    assert checked.code == 0, checked.output
    made = run_cli("unpatch", "-d", "metax_C550", cwd=world.project)
    assert made.code == 0, made.output
    tree = world.build / "metax_C550" / "vllm"
    for number, path in enumerate(ORIGINAL):
        assert (tree / path).read_text() == f"first line\nnew {number}\n"


def test_dry_run_prints_the_plan_and_changes_nothing(world: World) -> None:
    write(world.flagscale, per_file("Metax_C550", world.commit, {"vllm/envs.py": 0}))
    before = snapshot(world.project)
    result = world.run("--dry-run")
    assert result.code == 0, result.output
    assert result.stdout.splitlines()[:4] == [
        "hardware/Metax_C550/vllm: device metax_C550, backend vllm, layout per-file",
        f"  base: vllm 0.8.5 at {world.commit}",
        f"  FlagScale commit: {FS_COMMIT}",
        "  patch 1/1: change vllm/envs.py (1 file, 152 bytes; dev <dev@metax-tech.com>, "
        "1970-01-01T00:00:00Z, unknown)",
    ]
    assert result.stdout.splitlines()[-1] == (
        "1 patch(es), 1 file, 0 skipped, from 1 FlagScale folder(s) of 1 device(s): metax_C550"
    )
    assert snapshot(world.project) == before
    assert not world.build.exists()


def test_a_set_that_does_not_apply_is_reported_and_leaves_nothing_the_others_land(
    world: World,
) -> None:
    stale = per_file("Cambricon_MLU", world.commit,
                     {"vllm/envs.py": 7, "setup.py": 4, "csrc/moe.cu": 3})
    for path in ("vllm/envs.py", "csrc/moe.cu"):
        number = ALL_FIVE[path]
        stale[f"hardware/Cambricon_MLU/vllm/{path}.patch"] = (
            modify(path, number).replace(f"-old {number}", "-something else") + "\n"
        )
    write(world.flagscale, {**per_file("Metax_C550", world.commit, ALL_FIVE), **stale})
    result = world.run("--git-url", f"vllm={world.repository}")
    assert result.code == 4, result.output
    assert result.stdout.splitlines() == [
        "device         backend  base        files  patches  clean  3-way  failed",
        "Cambricon_MLU  vllm     vllm-0.8.5  3      3        1      0      2",
        "metax_C550     vllm     vllm-0.8.5  5      4        5      0      0",
        "Cambricon_MLU/vllm: 2 of 3 patch(es) do not apply: 2 file(s)",
        "  patch 1/3 (change csrc/moe.cu):",
        "    csrc/moe.cu: hunk #1 @@ -1,2 +1,2 @@ does not match the base",
        "        | first line",
        "        | something else",
        "  patch 3/3 (change vllm/envs.py):",
        "    vllm/envs.py: hunk #1 @@ -1,2 +1,2 @@ does not match the base",
        "        | first line",
        "        | something else",
    ]
    assert result.stderr.splitlines()[-2:] == [
        "error: 1 of 2 device and backend set(s) were not imported: Cambricon_MLU/vllm",
        "hint: The summary above says why; the sets that were imported are in the store. Fix "
        "what failed and import again with -d and --backend.",
    ]
    assert not (world.store / "Cambricon_MLU").exists()
    assert not (world.build / "Cambricon_MLU" / "vllm").exists()
    assert (world.store / "metax_C550" / "vllm-0.8.5" / "series").is_file()


def test_a_commit_that_cannot_be_fetched_falls_back_to_the_release_with_a_note(
    world: World,
) -> None:
    sdists = world.root / "sdists"
    sdists.mkdir()
    sdist = make_sdist(sdists / "vllm-9.9.9.tar.gz", "vllm-9.9.9",
                       {path: text.encode() for path, text in ORIGINAL.items()})
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    write(world.flagscale, per_file("Metax_C550", "ab" * 20, {"vllm/envs.py": 0},
                                    version="9.9.9"))
    gone = world.root / "no-such-repository"
    result = world.run("--git-url", f"vllm={gone}", "--sdist", str(sdists))
    assert result.code == 0, result.output
    why = f"FlagScale pins vllm at commit {'ab' * 20}, which could not be used (cannot fetch commit "
    instead = "; this base is the released sdist of 9.9.9 instead"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    # Issue 22, defect 11: git's own line says why; the store holds no machine path.
    assert warnings[0] == (
        f"warning: metax_C550/vllm: {why}abababababab from {gone}: '{gone}' does not appear to "
        f"be a git repository){instead}"
    )
    base = (world.store / "metax_C550" / "vllm-9.9.9" / "base.toml").read_text()
    assert f'filename = "vllm-9.9.9.tar.gz"\nsha256 = "{sha}"\n' in base
    assert (
        f'note = "{why}abababababab from <the --git-url of vllm>: \'<the --git-url of vllm>\' '
        f'does not appear to be a git repository){instead}"\n'
    ) in base
    assert str(world.root) not in base


def test_encrypted_sets_are_skipped_without_the_key_and_imported_with_it(
    world: World, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    plain = modify("vllm/envs.py", 0).encode()
    write(world.flagscale, {
        "hardware/BI_V150/vllm/diff.yaml": diff_yaml("BI_V150", "vllm", "0.8.5", world.commit,
                                                     "someone@iluvatar.com"),
        "hardware/BI_V150/vllm/diff.patch.encrypted": encrypt(plain, key),
    })  # fmt: skip
    skipped = world.run("--git-url", f"vllm={world.repository}")
    assert skipped.code == 0, skipped.output
    assert skipped.stdout.splitlines()[1] == (
        "BI_V150  vllm     vllm-0.8.5  0      0        0      0      0"
    )
    assert skipped.stdout.splitlines()[2].startswith("BI_V150/vllm: skipped: ")
    assert not (world.store / "BI_V150").exists()
    keys = key_folder(tmp_path / "keys", key)
    # Decrypted, they become private patches: they need recipients.
    unnamed = world.run("--git-url", f"vllm={world.repository}", "--private-key", str(keys))
    assert unnamed.code == 2, unnamed.output
    assert unnamed.stdout.splitlines()[2:4] == [
        "BI_V150/vllm: its encrypted patches become private patches, encrypted to the "
        "device's recipients, and none are named",
        "  pass --recipient NAME=AGE-OR-SSH-PUBLIC-KEY for a new device, or add "
        f"[private.recipients] to {world.store / 'BI_V150' / 'device.toml'}",
    ]
    assert not (world.store / "BI_V150").exists()
    identity = pyrage.x25519.Identity.generate()
    age_key = tmp_path / "ci.key"
    age_key.write_text(f"{identity}\n")
    imported = world.run("--git-url", f"vllm={world.repository}", "--private-key", str(keys),
                         "--recipient", f"ci={identity.to_public()}")
    assert imported.code == 0, imported.output
    assert imported.stdout.splitlines()[1] == (
        "BI_V150  vllm     vllm-0.8.5  1      1        1      0      0"
    )
    base = world.store / "BI_V150" / "vllm-0.8.5"
    assert sorted(p.name for p in base.iterdir()) == [
        "base.toml", "change-vllm-envs-py.patch.age", "series"
    ]
    device = (world.store / "BI_V150" / "device.toml").read_text()
    assert device.endswith(f'\n[private.recipients]\nci = "{identity.to_public()}"\n')
    # No plaintext anywhere but in the tree made from it: not in the store, not in
    # the temporary folder, not in the FlagScale checkout beside the encrypted file.
    marker = b"+new 0"
    leaked = [p for p in world.root.rglob("*") if p.is_file() and marker in p.read_bytes()
              and world.build not in p.parents]  # fmt: skip
    assert leaked == []
    # With the new age key, check and unpatch read it; the old RSA key is not needed.
    checked = run_cli("--store", str(world.store), "check", "-d", "BI_V150",
                      "--identity", str(age_key), cwd=world.project)
    assert checked.code == 0, checked.output


def test_flagscale_takes_no_options_of_a_plain_import(world: World) -> None:
    write(world.flagscale, per_file("Metax_C550", world.commit, {"vllm/envs.py": 0}))
    result = world.run("-p", "2", "--project", "vllm")
    assert result.code == 2
    assert result.stderr.splitlines() == [
        "error: --flagscale takes no -p, --project: devices, bases and messages come from the "
        "FlagScale tree"
    ]
    plain = run_cli("import", "-d", "x", "--dry-run", cwd=world.project)
    assert plain.code == 2
    assert plain.stderr.splitlines() == [
        "error: --backend, --private-key, --git-url, --group-bytes and --dry-run go with "
        "--flagscale"
    ]


@pytest.mark.integration
def test_the_c550_series_as_a_flagscale_diff_imports_unpatches_and_builds(
    real_vllm: RealVllm, tmp_path: Path
) -> None:
    """The real C550 series squashed into FlagScale's diff.patch, pinned to a commit
    that cannot be fetched: it lands on the released 0.7.2 sdist, unpatches and
    builds a wheel holding the device's files."""
    squashed = subprocess.run(
        ["git", "diff", "--binary", "--full-index", "patchtool/base", "HEAD"],
        cwd=real_vllm.tree, capture_output=True, check=True,
    ).stdout  # fmt: skip
    root = tmp_path / "FlagScale"
    write(root, {
        "hardware/Metax_C550/vllm/diff.yaml": diff_yaml("Metax_C550", "vllm", "0.7.2", "cd" * 20),
        "hardware/Metax_C550/vllm/diff.patch": squashed,
    })  # fmt: skip
    project = tmp_path / "project"
    (project / "patches").mkdir(parents=True)
    env = dict(real_vllm.env)
    result = run_cli("import", "--flagscale", str(root), "--git-url",
                     f"vllm={tmp_path / 'no-such-repository'}", cwd=project, env=env)
    assert result.code == 0, result.output
    assert result.stdout.splitlines()[1].split()[:3] == ["metax_C550", "vllm", "vllm-0.7.2"]
    device_toml = project / "patches" / "metax_C550" / "device.toml"
    required = (REPOSITORY / "patches" / "metax_C550" / "device.toml").read_text()
    wanted = required[required.index("required-files"):]
    # The series adds env.sh; import writes no env-script (issue 21 #9): name it.
    device_toml.write_text(device_toml.read_text() + '\n[build]\nenv-script = "env.sh"\n'
                           + 'skip-build-requires = ["cmake", "ninja"]\n' + wanted)
    made = run_cli("unpatch", "-d", "metax_C550", cwd=project, env=env)
    assert made.code == 0, made.output
    built = run_cli("build-wheel", "-d", "metax_C550", cwd=project, env=env)
    assert built.code == 0, built.output
    wheel = Path(built.stdout.strip())
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {
        "vllm/model_executor/layers/fused_moe/fused_moe.py",
        "vllm/model_executor/layers/fused_moe/configs/E=256,N=256,device_name=Device_4000.json",
    } <= names
    shutil.rmtree(project / "build")
