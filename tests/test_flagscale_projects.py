"""Issue 22: every backend of a FlagScale tree a first-class project, and the
defects found importing FlagScale's real hardware/ tree, each pinned here.

The trees and repositories are made here in the real formats (a vLLM-like and a
Megatron-like repository, FlagScale's per-file, squashed, encrypted and legacy
layouts); none of FlagScale's or Megatron's files is in this repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import error_lines, git, make_sdist, run_cli
from test_flagscale import (
    LEGACY_MAIL,
    create,
    delete,
    diff_yaml,
    encrypt,
    key_folder,
    modify,
    write,
)
from test_flagscale_import import ALL_FIVE, ORIGINAL, World, per_file

from patchtool.core.fsutil import remove_tree
from patchtool.sources.cache import BaseCache, git_source_key
from patchtool.store.model import GitSource, GitUrl

MEGATRON_FILES = {
    "megatron/core/parallel_state.py": "first line\nold 0\n",
    "megatron/training/arguments.py": "first line\nold 1\n",
    "tasks/main.py": "first line\nold 2\n",
}
MEGATRON_URL = "https://github.com/NVIDIA/Megatron-LM.git"


def repository(where: Path, files: dict[str, str]) -> str:
    where.mkdir(parents=True)
    git(where, "init", "--quiet")
    write(where, dict(files))
    git(where, "add", "--all")
    git(where, "commit", "--quiet", "-m", "upstream")
    return git(where, "rev-parse", "HEAD").strip()


def megatron_set(device: str, commit: str, version: str = "0.12.0") -> dict[str, str | bytes]:
    return {
        f"hardware/{device}/Megatron-LM/diff.yaml": diff_yaml(
            device, "Megatron-LM", version, commit
        ).replace("- inference", "- train"),
        f"hardware/{device}/Megatron-LM/diff.patch": modify("megatron/core/parallel_state.py", 0)
        + modify("tasks/main.py", 2),
    }


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def table(result_stdout: str) -> list[str]:
    return result_stdout.splitlines()


def cache() -> Path:
    return Path(os.environ["PATCHTOOL_CACHE_DIR"])


# --------------------------------------------------------------------------- defect 1


def test_a_megatron_set_is_a_base_of_project_megatron_lm_beside_the_vllm_one(
    world: World, tmp_path: Path
) -> None:
    megatron = tmp_path / "Megatron-LM"
    commit = repository(megatron, MEGATRON_FILES)
    write(world.flagscale, {**per_file("Metax_C550", world.commit, ALL_FIVE),
                            **megatron_set("Metax_C550", commit)})  # fmt: skip
    result = world.run("--git-url", f"vllm={world.repository}",
                       "--git-url", f"Megatron-LM={megatron}")  # fmt: skip
    assert result.code == 0, result.output
    assert table(result.stdout) == [
        "device      backend      base                files  patches  clean  3-way  failed",
        "metax_C550  Megatron-LM  Megatron-LM-0.12.0  2      2        2      0      0",
        "metax_C550  vllm         vllm-0.8.5          5      4        5      0      0",
    ]
    folder = world.store / "metax_C550" / "Megatron-LM-0.12.0"
    assert (folder / "base.toml").read_text().startswith(
        f'project = "Megatron-LM"\nversion = "0.12.0"\ncommit = "{commit}"\n\n'
        f'[source]\ntype = "git"\nurl = "{MEGATRON_URL}"\n'
    )  # the URL everyone shares, not the local clone it was fetched from
    assert str(tmp_path) not in (folder / "base.toml").read_text()
    # Its objects are in the Megatron-LM source's own cache repository, none in vllm's.
    key = git_source_key(GitSource(GitUrl(MEGATRON_URL)), folder)
    assert git(cache() / "sources" / f"{key}.git", "cat-file", "-t", commit).strip() == "commit"
    assert not (BaseCache(cache()).release_repository("vllm") / "HEAD").exists()
    assert not (BaseCache(cache()).release_repository("Megatron-LM") / "HEAD").exists()
    # Two projects, two trees: naming the base is required, and neither moves the other.
    bare = run_cli("unpatch", "-d", "metax_C550", cwd=world.project)
    assert (bare.code, error_lines(bare)) == (2, [
        "error: device 'metax_C550' has bases of 2 projects (Megatron-LM, vllm): name the base",
        "hint: Pass --commit-id (the newest of each: Megatron-LM-0.12.0, vllm-0.8.5), or set "
        f"default-base in {world.store / 'metax_C550' / 'device.toml'}.",
    ])  # fmt: skip
    for base in ("vllm-0.8.5", "Megatron-LM-0.12.0"):
        made = run_cli("unpatch", "-d", "metax_C550", "--commit-id", base, cwd=world.project)
        assert made.code == 0, made.output
    assert (world.build / "metax_C550" / "vllm" / "vllm" / "envs.py").read_text() == (
        "first line\nnew 0\n"
    )
    assert (world.build / "metax_C550" / "Megatron-LM" / "tasks" / "main.py").read_text() == (
        "first line\nnew 2\n"
    )
    checked = run_cli("check", "--offline", cwd=world.project)
    assert checked.code == 0, checked.output


def test_a_plain_import_onto_a_git_base_takes_the_project_it_is_given(
    world: World, tmp_path: Path
) -> None:
    megatron = tmp_path / "Megatron-LM"
    commit = repository(megatron, MEGATRON_FILES)
    change = tmp_path / "change.diff"
    change.write_text(modify("tasks/main.py", 2))
    common = ("import", "-d", "dev", "--create", "--display-name", "Dev", "--vendor", "Example",
              "--onto", f"git+{megatron}@{commit}", "--author", "A <a@example.invalid>",
              "-m", "Change the task")  # fmt: skip
    unnamed = run_cli(*common, str(change), cwd=world.project)
    assert (unnamed.code, error_lines(unnamed)) == (2, [
        f"error: --onto 'git+{megatron}@{commit}' names a git source but no project, and the "
        "device has no base (or bases of several projects) to take it from",
        "hint: Name the project: --project NAME (e.g. --project vllm), or NAME==VERSION for a "
        "release.",
    ])  # fmt: skip
    assert not (world.store / "dev").exists()  # refused before anything was created
    named = run_cli(*common, "--project", "Megatron-LM", str(change), cwd=world.project)
    assert named.code == 0, named.output
    base = world.store / "dev" / f"Megatron-LM-{commit[:12]}"
    assert (base / "base.toml").read_text().startswith('project = "Megatron-LM"\n')
    assert (world.build / "dev" / "Megatron-LM" / "tasks" / "main.py").is_file()


# --------------------------------------------------------------------------- defect 2


def test_3way_drops_a_change_already_in_the_base_and_the_trial_merges_too(
    world: World, tmp_path: Path
) -> None:
    """A change the base already holds merges into nothing: dropped and said, not a
    crash of `git commit`; a set that fails reports its groups tried with --3way."""
    upstream = tmp_path / "later"
    git(tmp_path, "clone", "--quiet", str(world.repository), str(upstream))
    (upstream / "setup.py").write_text("first line\nnew 4\n")  # FlagScale's change, upstreamed
    git(upstream, "commit", "--quiet", "-am", "take the vendor's setup.py")
    later = git(upstream, "rev-parse", "HEAD").strip()
    files = per_file("Metax_C550", later, {"vllm/envs.py": 0, "setup.py": 4})
    with_index = modify("setup.py", 4).replace(
        "index 1111111..2222222", f"index {blob(world.repository, 'setup.py')}..{blob(upstream, 'setup.py')}"
    )
    files["hardware/Metax_C550/vllm/setup.py.patch"] = with_index
    write(world.flagscale, files)
    plain = world.run("--git-url", f"vllm={upstream}")
    assert plain.code == 4, plain.output
    assert table(plain.stdout)[1:3] == [
        "metax_C550  vllm     vllm-0.8.5  2      2        1      0      1",
        "metax_C550/vllm: 1 of 2 patch(es) do not apply: 1 file(s)",
    ]
    merged = world.run("--git-url", f"vllm={upstream}", "--3way")
    assert merged.code == 0, merged.output
    assert table(merged.stdout) == [
        "device      backend  base        files  patches  clean  3-way  failed",
        "metax_C550  vllm     vllm-0.8.5  2      1        1      0      0",
        "metax_C550/vllm: already in the base, dropped: hardware/Metax_C550/vllm, patch 1 of 2 "
        "(change setup.py)",
    ]
    assert (world.store / "metax_C550" / "vllm-0.8.5" / "series").read_text().splitlines()[1:] == [
        "change-vllm-envs-py.patch"
    ]


def blob(repo: Path, path: str) -> str:
    return git(repo, "rev-parse", f"HEAD:{path}").strip()


# --------------------------------------------------------------------------- defect 4


def test_lint_takes_a_deletion_only_patch_for_one_that_changes_files(
    world: World, tmp_path: Path
) -> None:
    files = per_file("Cambricon_MLU", world.commit, {})
    files["hardware/Cambricon_MLU/vllm/setup.py.patch"] = delete("setup.py").replace(
        "-bye\n", "-first line\n-old 4\n"
    ).replace("@@ -1 +0,0 @@", "@@ -1,2 +0,0 @@")
    write(world.flagscale, files)
    result = world.run("--git-url", f"vllm={world.repository}")
    assert result.code == 0, result.output
    assert "changes no file" not in result.stderr
    checked = run_cli("check", "--offline", cwd=world.project)
    assert checked.code == 0, checked.output
    assert "changes no file" not in checked.output


# --------------------------------------------------------------------------- defects 5, 12


def test_a_bad_folder_is_a_row_with_its_reason_and_the_rest_land(world: World) -> None:
    write(world.flagscale, {
        **per_file("Metax_C550", world.commit, {"vllm/envs.py": 0}),
        "hardware/MUSA_S5000/vllm/diff.yaml": diff_yaml("MUSA_S5000", "vllm"),
        "hardware/Kunlunxin_R310p/vllm/diff.yaml": diff_yaml("Kunlunxin_R310p", "vllm", "main",
                                                             commit=None),
        "hardware/Kunlunxin_R310p/vllm/setup.py.patch": modify("setup.py", 4),
    })  # fmt: skip
    result = world.run("--git-url", f"vllm={world.repository}")
    assert result.code == 2, result.output  # the first failure's: Kunlunxin's, a usage error
    assert table(result.stdout) == [
        "device           backend  base        files  patches  clean  3-way  failed",
        "Kunlunxin_R310p  vllm     -           1      1        0      0      0",
        "MUSA_S5000       vllm     -           0      0        0      0      0",
        "metax_C550       vllm     vllm-0.8.5  1      1        1      0      0",
        "Kunlunxin_R310p/vllm: hardware/Kunlunxin_R310p/vllm: FlagScale names no vllm base for "
        "it ('main' is a branch or tag, not a release, and no commit is pinned)",
        "  Name the base with --onto VERSION (a new base, e.g. --onto 0.7.2) or --commit-id BASE "
        "(one the device has).",
        "MUSA_S5000/vllm: cannot be read: hardware/MUSA_S5000/vllm holds diff.yaml but no patch",
        "  FlagScale keeps a backend's changes beside diff.yaml as diff.patch or per-file "
        "<path>.patch files; this folder's are missing.",
    ]
    assert error_lines(result)[-2:] == [
        "error: 2 of 3 device and backend set(s) were not imported: Kunlunxin_R310p/vllm, "
        "MUSA_S5000/vllm",
        "hint: The summary above says why; the sets that were imported are in the store. Fix "
        "what failed and import again with -d and --backend.",
    ]
    assert (world.store / "metax_C550" / "vllm-0.8.5" / "series").is_file()
    # Issue 22, defect 12: no set reports its own scratch folder as left by a run.
    assert "left by an interrupted run" not in result.stderr
    # The vendor is the maker's name, not a guess from the folder's prefix.
    assert 'vendor = "MetaX"' in (world.store / "metax_C550" / "device.toml").read_text()


# --------------------------------------------------------------------------- defects 6, 7


def test_several_keys_and_a_private_failure_shown_by_position_only(
    world: World, tmp_path: Path
) -> None:
    mine = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    theirs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    secret_line = "something the vendor keeps private"
    stale = modify("vllm/envs.py", 0).replace("-old 0", f"-{secret_line}")
    write(world.flagscale, {
        "hardware/BI_V150/vllm/diff.yaml": diff_yaml("BI_V150", "vllm", "0.8.5", world.commit),
        "hardware/BI_V150/vllm/diff.patch.encrypted": encrypt(stale.encode(), mine),
        "hardware/Tsing_micro/vllm/diff.yaml": diff_yaml("Tsing_micro", "vllm", "0.8.5",
                                                         world.commit),
        "hardware/Tsing_micro/vllm/diff.patch.encrypted": encrypt(
            modify("setup.py", 4).encode(), theirs),
    })  # fmt: skip
    identity = pyrage.x25519.Identity.generate()
    keys = ("--private-key", str(key_folder(tmp_path / "mine", mine)))
    only_mine = world.run("--git-url", f"vllm={world.repository}", *keys,
                          "--recipient", f"ci={identity.to_public()}")  # fmt: skip
    assert only_mine.code == 4, only_mine.output
    assert table(only_mine.stdout)[2].startswith("Tsing_micro  vllm     vllm-0.8.5  0")
    assert table(only_mine.stdout)[3:] == [
        "BI_V150/vllm: 1 of 1 patch(es) do not apply: 1 file(s)",
        "  patch 1/1 (change vllm/envs.py):",
        "    vllm/envs.py: hunk #1 @@ -1,2 +1,2 @@ does not match the base",
        "Tsing_micro/vllm: skipped: 1 encrypted patch file(s) under hardware/Tsing_micro/vllm, "
        f"and it is not encrypted to the key {tmp_path / 'mine' / 'private_key.pem'}: the set is "
        "not imported (pass the vendor's key with --private-key to read it)",
    ]
    assert secret_line not in only_mine.output and "first line" not in only_mine.output
    both = world.run("--git-url", f"vllm={world.repository}", *keys, "--private-key",
                     str(key_folder(tmp_path / "theirs", theirs)), "-d", "Tsing_micro",
                     "--recipient", f"ci={identity.to_public()}")  # fmt: skip
    assert both.code == 0, both.output
    assert table(both.stdout)[1] == "Tsing_micro  vllm     vllm-0.8.5  1      1        1      0      0"


def test_one_redaction_rule_for_unpatch_and_check(world: World, tmp_path: Path) -> None:
    """A private patch that no longer applies: unpatch and check name the file and
    the hunk's position, never its lines (trees.applying.redacted)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write(world.flagscale, {
        "hardware/BI_V150/vllm/diff.yaml": diff_yaml("BI_V150", "vllm", "0.8.5", world.commit),
        "hardware/BI_V150/vllm/diff.patch.encrypted": encrypt(
            modify("vllm/envs.py", 0).encode(), key),
    })  # fmt: skip
    identity = pyrage.x25519.Identity.generate()
    age_key = tmp_path / "ci.key"
    age_key.write_text(f"{identity}\n")
    imported = world.run("--git-url", f"vllm={world.repository}", "--private-key",
                         str(key_folder(tmp_path / "keys", key)),
                         "--recipient", f"ci={identity.to_public()}")  # fmt: skip
    assert imported.code == 0, imported.output
    # The base moves under it: the private patch no longer applies.
    moved = tmp_path / "moved"
    git(tmp_path, "clone", "--quiet", str(world.repository), str(moved))
    (moved / "vllm" / "envs.py").write_text("first line\nsomething secret upstream\n")
    git(moved, "commit", "--quiet", "-am", "move")
    commit = git(moved, "rev-parse", "HEAD").strip()
    base = world.store / "BI_V150" / "vllm-0.8.5" / "base.toml"
    base.write_text(base.read_text().replace(world.commit, commit).replace(
        "https://github.com/vllm-project/vllm.git", str(moved)))  # fmt: skip
    for command in (("unpatch", "-d", "BI_V150"), ("check", "-d", "BI_V150")):
        result = run_cli(*command, "--identity", str(age_key), cwd=world.project)
        assert result.code == 4, result.output
        assert "vllm/envs.py: hunk #1 @@ -1,2 +1,2 @@ does not match the base" in result.output
        assert "first line" not in result.output and "secret" not in result.output


# --------------------------------------------------------------------------- defect 8


def test_a_legacy_set_imports_onto_the_base_onto_names(world: World, tmp_path: Path) -> None:
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    make_sdist(sdists / "vllm-0.7.2.tar.gz", "vllm-0.7.2", {
        "vllm/worker/worker.py": b"first line\nold 0\n", "README.md": b"# vllm\n",
        "tests/list.md": b"head\n- \n",
    })  # fmt: skip
    write(world.flagscale, {"hardware/CZ_A100/085811f4/085811f4.patch": LEGACY_MAIL.replace(
        create("vllm/csrc/x100.cu"), "")})  # fmt: skip
    unnamed = world.run("--sdist", str(sdists))
    assert unnamed.code == 2, unnamed.output
    assert table(unnamed.stdout)[1:] == [
        "CZ_A100  vllm     -     2      2        0      0      0",
        "CZ_A100/vllm: hardware/CZ_A100/085811f4: FlagScale names no vllm base for it",
        "  Name the base with --onto VERSION (a new base, e.g. --onto 0.7.2) or --commit-id BASE "
        "(one the device has).",
    ]
    named = world.run("--sdist", str(sdists), "--onto", "0.7.2")
    assert named.code == 0, named.output
    assert table(named.stdout)[1] == "CZ_A100  vllm     vllm-0.7.2  2      2        2      0      0"
    base = (world.store / "CZ_A100" / "vllm-0.7.2" / "base.toml").read_text()
    assert 'note = "FlagScale names no vllm base for hardware/CZ_A100/085811f4: --onto named it"' in base
    made = run_cli("unpatch", "-d", "CZ_A100", cwd=world.project)
    assert made.code == 0, made.output
    assert (world.build / "CZ_A100" / "vllm" / "vllm" / "worker" / "worker.py").read_text() == (
        "first line\nnew 0\n"
    )
    # --commit-id names a base the device has already: its series conflicts with the set.
    again = world.run("--sdist", str(sdists), "--commit-id", "vllm-0.7.2")
    assert again.code == 4, again.output
    assert table(again.stdout)[-1] == (
        "  every patch applies to vllm-0.7.2 alone: the conflict is with the series the device "
        "already has on it"
    )
    # Emptied (and its tree with it), the base takes the set again.
    remove_tree(world.build / "CZ_A100" / "vllm")
    folder = world.store / "CZ_A100" / "vllm-0.7.2"
    for patch in folder.glob("*.patch"):
        patch.unlink()
    (folder / "series").write_text("# CZ_A100 series for vllm 0.7.2.\n")
    again = world.run("--sdist", str(sdists), "--commit-id", "vllm-0.7.2")
    assert again.code == 0, again.output
    assert table(again.stdout)[1] == "CZ_A100  vllm     vllm-0.7.2  2      2        2      0      0"


# --------------------------------------------------------------------------- defects 9, 10


def test_failed_deletions_are_named_and_every_failing_hunk_is_listed(world: World) -> None:
    files = per_file("Cambricon_MLU", world.commit, {})
    files["hardware/Cambricon_MLU/vllm/setup.py.patch"] = (
        delete("setup.py").replace("-bye\n", "-first line\n-not what the base has\n")
        .replace("@@ -1 +0,0 @@", "@@ -1,2 +0,0 @@")
    )  # fmt: skip
    for number, path in enumerate(ORIGINAL):
        if path != "setup.py":
            files[f"hardware/Cambricon_MLU/vllm/{path}.patch"] = modify(path, number).replace(
                f"-old {number}", "-stale"
            )
    write(world.flagscale, files)
    result = world.run("--git-url", f"vllm={world.repository}")
    assert result.code == 4, result.output
    lines = table(result.stdout)
    assert lines[1] == "Cambricon_MLU  vllm     vllm-0.8.5  5      4        0      0      5"
    assert lines[2] == "Cambricon_MLU/vllm: 4 of 4 patch(es) do not apply: 5 file(s)"
    named = [line.strip() for line in lines if line.startswith("    ") and ": " in line
             and not line.startswith("        |")]  # fmt: skip
    assert named == [
        "csrc/moe.cu: hunk #1 @@ -1,2 +1,2 @@ does not match the base",
        "setup.py: the file it removes differs from the base (git: removal patch leaves file "
        "contents)",
        "vllm/envs.py: hunk #1 @@ -1,2 +1,2 @@ does not match the base",
        "vllm/utils.py: hunk #1 @@ -1,2 +1,2 @@ does not match the base",
        "vllm/model_executor/fused_moe.py: hunk #1 @@ -1,2 +1,2 @@ does not match the base",
    ]
    assert not [line for line in lines if "more" in line]


# --------------------------------------------------------------------------- defect 12


def test_one_commit_has_one_label_and_a_set_without_a_base_fails_no_file(
    world: World, tmp_path: Path
) -> None:
    megatron = tmp_path / "Megatron-LM"
    commit = repository(megatron, MEGATRON_FILES)
    write(world.flagscale, {**megatron_set("Cambricon_MLU", commit, "0.12.0"),
                            **megatron_set("Huawei_Atlas800TA3", commit, "0.12.1"),
                            **megatron_set("Hygon_BW1000", "ab" * 20, "0.12.0")})  # fmt: skip
    result = world.run("--git-url", f"Megatron-LM={megatron}")
    assert result.code == 3, result.output
    assert table(result.stdout)[:4] == [
        "device              backend      base                files  patches  clean  3-way  failed",
        "Cambricon_MLU       Megatron-LM  Megatron-LM-0.12.0  2      2        2      0      0",
        "Huawei_Atlas800TA3  Megatron-LM  Megatron-LM-0.12.0  2      2        2      0      0",
        "Hygon_BW1000        Megatron-LM  Megatron-LM-0.12.0  2      2        0      0      0",
    ]
    assert table(result.stdout)[4] == (
        "Hygon_BW1000/Megatron-LM: hardware/Hygon_BW1000/Megatron-LM: no base to import onto: "
        f"FlagScale pins Megatron-LM at commit {'ab' * 20}, which cannot be used (commit "
        f"{'ab' * 20} is not in {megatron}), and Megatron-LM publishes no sdist patchtool takes "
        "as a base"
    )
    huawei = (world.store / "Huawei_Atlas800TA3" / "Megatron-LM-0.12.0" / "base.toml").read_text()
    assert (
        'note = "FlagScale names this commit Megatron-LM 0.12.1 here; the store already calls '
        'it 0.12.0"'
    ) in huawei


def test_dry_run_needs_no_store(world: World, tmp_path: Path) -> None:
    write(world.flagscale, per_file("Metax_C550", world.commit, {"vllm/envs.py": 0}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("import", "--flagscale", str(world.flagscale), "--dry-run", cwd=elsewhere)
    assert result.code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "hardware/Metax_C550/vllm: device metax_C550, backend vllm, layout per-file"
    )
    assert list(elsewhere.iterdir()) == []


def test_the_sglang_sdist_is_read_one_level_deeper_or_refused(
    world: World, tmp_path: Path
) -> None:
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    make_sdist(sdists / "sglang-0.4.6.tar.gz", "sglang-0.4.6",
               {"sglang/srt/server.py": b"first line\nold 0\n", "pyproject.toml": b"[project]\n"})  # fmt: skip
    gone = tmp_path / "no-such-repository"

    def sglang(device: str, paths: dict[str, str]) -> dict[str, str | bytes]:
        files: dict[str, str | bytes] = {f"hardware/{device}/sglang/diff.yaml": diff_yaml(
            device, "sglang", "0.4.6", "cd" * 20)}  # fmt: skip
        for path, text in paths.items():
            files[f"hardware/{device}/sglang/{path}.patch"] = text
        return files

    write(world.flagscale, {
        **sglang("Dev_A", {"python/sglang/srt/server.py": modify("python/sglang/srt/server.py")}),
        **sglang("Dev_B", {"python/sglang/srt/server.py": modify("python/sglang/srt/server.py"),
                           "docker/Dockerfile": create("docker/Dockerfile")}),
    })  # fmt: skip
    result = world.run("--git-url", f"sglang={gone}", "--sdist", str(sdists))
    assert result.code == 3, result.output
    assert table(result.stdout)[1:4] == [
        "Dev_A   sglang   sglang-0.4.6  1      1        1      0      0",
        "Dev_B   sglang   sglang-0.4.6  2      2        0      0      0",
        f"Dev_B/sglang: hardware/Dev_B/sglang: the pinned commit cannot be used (cannot fetch "
        f"commit cdcdcdcdcdcd from {gone}: '{gone}' does not appear to be a git repository), and "
        "the sglang sdist holds only the repository's python/ folder: 1 of the set's files lie "
        "outside it (first: docker/Dockerfile)",
    ]
    made = run_cli("unpatch", "-d", "Dev_A", cwd=world.project)
    assert made.code == 0, made.output
    assert (world.build / "Dev_A" / "sglang" / "sglang" / "srt" / "server.py").read_text() == (
        "first line\nnew 0\n"
    )
    assert not (world.build / "Dev_A" / "sglang" / "python").exists()


# --------------------------------------------------------------------------- reviewable series


def test_groups_split_above_the_size_given_and_subjects_say_what_the_files_do(
    world: World, tmp_path: Path
) -> None:
    files = per_file("Cambricon_MLU", world.commit, {})
    for folder in ("attention", "distributed", "model_executor"):
        for number in range(3):
            path = f"vllm_mlu/{folder}/part_{number}.py"
            files[f"hardware/Cambricon_MLU/vllm/{path}.patch"] = create(path).replace(
                "+hello\n", "".join(f"+line {n}\n" for n in range(40))
            ).replace("@@ -0,0 +1 @@", "@@ -0,0 +1,40 @@")
    write(world.flagscale, files)
    plan = run_cli("import", "--flagscale", str(world.flagscale), "--dry-run",
                   "--group-bytes", "1700", cwd=world.project).stdout  # fmt: skip
    subjects = [line.split(": ", 1)[1].split(" (", 1)[0] for line in plan.splitlines()
                if line.startswith("  patch ")]  # fmt: skip
    assert subjects == [
        "add vllm_mlu/attention/", "add vllm_mlu/distributed/", "add vllm_mlu/model_executor/",
    ]  # fmt: skip
    whole = run_cli("import", "--flagscale", str(world.flagscale), "--dry-run",
                    cwd=world.project).stdout  # fmt: skip
    assert "  patch 1/1: add vllm_mlu/ (9 new files) (9 files, " in whole


def test_author_and_date_come_from_flagscales_git_history(world: World, tmp_path: Path) -> None:
    write(world.flagscale, per_file("Metax_C550", world.commit, {"vllm/envs.py": 0},
                                    contact=""))  # fmt: skip
    git(world.flagscale, "init", "--quiet")
    git(world.flagscale, "add", "--all")
    subprocess.run(
        ["git", "commit", "--quiet", "-m", "Add the C550 patches"],
        cwd=world.flagscale, check=True,
        env={**os.environ, "GIT_AUTHOR_NAME": "Mei Vendor",
             "GIT_AUTHOR_EMAIL": "mei@metax-tech.com",
             "GIT_AUTHOR_DATE": "2025-06-01T10:00:00+08:00"},
    )  # fmt: skip
    flagscale_commit = git(world.flagscale, "rev-parse", "HEAD").strip()
    result = world.run("--git-url", f"vllm={world.repository}")
    assert result.code == 0, result.output
    tree = world.build / "metax_C550" / "vllm"
    log = git(tree, "log", "-1", "--format=%an <%ae>%n%aI%n%B")
    assert log.splitlines()[:2] == ["Mei Vendor <mei@metax-tech.com>", "2025-06-01T10:00:00+08:00"]
    assert (
        f"Author and date: FlagScale commit {flagscale_commit}, the last to change "
        "hardware/Metax_C550/vllm/vllm/envs.py.patch." in log
    )


def test_the_vendors_trailing_whitespace_is_reported_as_its_own_and_check_passes(
    world: World,
) -> None:
    """Lint findings that are the vendor's own (trailing whitespace in the lines a
    FlagScale patch adds) are reported as such, and check --offline passes."""
    files = per_file("Metax_C550", world.commit, {"vllm/envs.py": 0, "setup.py": 4})
    files["hardware/Metax_C550/vllm/setup.py.patch"] = modify("setup.py", 4).replace(
        "+new 4\n", "+new 4   \n"
    )
    write(world.flagscale, files)
    result = world.run("--git-url", f"vllm={world.repository}")
    assert result.code == 0, result.output
    assert "would fail `patchtool check`" not in result.stderr
    own = (
        "1 line(s) with trailing whitespace in 1 patch(es) imported from FlagScale: the "
        "vendor's own, reported and accepted"
    )
    assert own in result.stderr
    patch = (world.store / "metax_C550" / "vllm-0.8.5" / "change-setup-py.patch").read_text()
    assert "\nUpstream-Status: Pending\nImported-From: FlagScale hardware/Metax_C550/vllm\n" in patch
    checked = run_cli("check", "--offline", cwd=world.project)
    assert checked.code == 0, checked.output
    assert f"        {own}" in checked.stdout.splitlines()
