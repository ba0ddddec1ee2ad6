"""The store is untrusted input: each way a hostile pull request got past the
tool (issue 8) is a test here. Each asserts the exit code, the message, and
that nothing outside the build folder, the cache and the temp folder changed
(the store and any earlier tree byte for byte)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    SyntheticUpstream,
    check_records,
    commit_all,
    error_lines,
    git,
    snapshot,
    write_git_base,
)

from patchtool.core.gitops import Git

CORPUS = Path(__file__).parent / "corpus"
UNSAFE_HINT = ("hint: Nothing was applied and no build tree was changed. patchtool refuses patches "
               "that could write outside the tree, into .git or through a symlink: fix or remove "
               "the patch (and its line in series).")  # fmt: skip
STALE_SERIES_HINT = (
    "hint: Keep both: `patchtool unpatch --device-type devA --force` makes a tree of the current "
    "series and keeps this one in a backup folder, from which you cherry-pick your commits. Or "
    "pass --force to replace the store's series with this tree's."
)


def stale_series_error(world: SyntheticUpstream, tree: Path) -> list[str]:
    """`patch`'s refusal to export over a series another export changed."""
    return [
        f"error: the store's series in {world.base_folder} changed since the build tree {tree} "
        "last read or wrote it (an export from another build folder, a pull, or an edit); "
        "exporting now would drop those changes",
        STALE_SERIES_HINT,
    ]


def outside(world: SyntheticUpstream, home: Path) -> dict[str, bytes]:
    """Everything a run may not touch: the world (store, sdists) but the build
    folder, and the home folder but the cache."""
    state = {f"root/{k}": v for k, v in snapshot(world.root).items()
             if not k.startswith("build/")}  # fmt: skip
    state.update({f"home/{k}": v for k, v in snapshot(home).items()
                  if not k.startswith("patchtool-cache/")})  # fmt: skip
    return state


# --------------------------------------------------------------------------- command execution


HOSTILE_URLS = [
    ("--upload-pack=touch {marker}", "starts with '-' (git would read it as an option)"),
    ("ext::sh -c touch% {marker}", "uses a remote helper ('<transport>::'), which could run commands"),
    ("ssh://-oProxyCommand=touch% {marker}/x", "has a host or user that starts with '-'"),
    ("-oProxyCommand=touch% {marker}@host:x", "starts with '-' (git would read it as an option)"),
    ("http://127.0.0.1:9/x", "uses the scheme 'http'; allowed: https, ssh, git, file"),
]


@pytest.mark.parametrize("command", ["unpatch", "check"])
@pytest.mark.parametrize(("url", "problem"), HOSTILE_URLS, ids=[u[0][:12] for u in HOSTILE_URLS])
def test_a_hostile_git_url_is_refused_before_git_runs(upstream: SyntheticUpstream,
                                                      hermetic_seal: Path, tmp_path: Path,
                                                      command: str, url: str,
                                                      problem: str) -> None:  # fmt: skip
    marker = tmp_path / "pwned"
    url = url.format(marker=marker)
    folder = write_git_base(upstream, url, "a" * 40)
    before = outside(upstream, hermetic_seal)
    extra = ("--commit-id", "git-base") if command == "unpatch" else ()
    result = upstream.run(command, *extra)
    assert result.code == 10, result.output
    message = f"{folder / 'base.toml'}: source.url: git URL {url!r} {problem}"
    hint = "hint: Use an https://, ssh://, git:// or file:// URL, user@host:path, or a local path."
    if command == "unpatch":
        assert error_lines(result) == [f"error: {message}", hint]
    else:  # check's hint is the failure's own, as unpatch gives it
        assert f"FAIL  devA  git-base  config\n        {message}\n" in result.stdout
        assert error_lines(result) == ["error: 1 check(s) failed: devA/git-base config", hint]
    assert not marker.exists()
    assert not (upstream.build / "devA" / "demo").exists()
    assert outside(upstream, hermetic_seal) == before


def test_every_git_call_pins_the_transports_and_the_git_spellings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIT_ALLOW_PROTOCOL in the user's environment would override protocol.allow:
    # it is not passed on to git.
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "ext:file")
    Git(tmp_path).run("init", "--quiet", str(tmp_path / "r"))
    repo = Git(tmp_path / "r")
    settings = {
        key: repo.run("config", "--get", key, check=False).text.strip()
        for key in ("protocol.allow", "protocol.ext.allow", "protocol.https.allow",
                    "protocol.http.allow", "core.protectHFS", "core.protectNTFS")
    }  # fmt: skip
    assert settings == {"protocol.allow": "never", "protocol.ext.allow": "",
                        "protocol.https.allow": "always", "protocol.http.allow": "",
                        "core.protectHFS": "true", "core.protectNTFS": "true"}  # fmt: skip
    marker = tmp_path / "pwned"
    result = Git(tmp_path).run(
        "ls-remote", "--", f"ext::sh -c touch% {marker}", check=False
    )
    assert result.returncode != 0
    assert "transport 'ext' not allowed" in result.stderr
    assert not marker.exists()


# --------------------------------------------------------------------------- writes outside


@pytest.mark.parametrize("project", ["../../escape", "ABSOLUTE", "a/b", "-x"])
def test_a_project_that_is_a_path_is_refused_by_check_and_unpatch(upstream: SyntheticUpstream,
                                                                  hermetic_seal: Path,
                                                                  tmp_path: Path,
                                                                  project: str) -> None:  # fmt: skip
    escape = tmp_path / "absolute" / "escape"
    project = str(escape) if project == "ABSOLUTE" else project
    base_toml = upstream.base_folder / "base.toml"
    base_toml.write_text(base_toml.read_text().replace('project = "demo"',
                                                       f'project = "{project}"'))  # fmt: skip
    before = outside(upstream, hermetic_seal)
    message = f"{base_toml}: project {project!r} is not a valid name"
    checked = upstream.run("check")
    assert checked.code == 10, checked.output
    assert f"FAIL  devA  demo-1.0  config\n        {message}\n" in checked.stdout
    hint = ("hint: A project is 1-100 characters of letters, digits, '.', '_', '+' and '-', "
            "starting with a letter or digit, and never contains '..'.")  # fmt: skip
    assert error_lines(checked) == ["error: 1 check(s) failed: devA/demo-1.0 config", hint]
    result = upstream.run("unpatch")
    assert result.code == 10, result.output
    assert error_lines(result) == [f"error: {message}", hint]
    assert not escape.parent.exists()
    assert outside(upstream, hermetic_seal) == before
    assert not (upstream.build / "devA" / "demo").exists()


@pytest.mark.parametrize("what", ["patch-file", "series", "base-folder"])
def test_a_symlink_in_the_store_is_refused(upstream: SyntheticUpstream, tmp_path: Path,
                                           hermetic_seal: Path, what: str) -> None:  # fmt: skip
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me\n")
    if what == "patch-file":
        (upstream.base_folder / "evil.patch").symlink_to(secret)
        (upstream.base_folder / "series").write_text("evil.patch\n")
        expected = (f"{upstream.base_folder / 'series'}:1: patch file 'evil.patch' is a symlink "
                    "or not a regular file")  # fmt: skip
        hint, failed = "hint: The store holds plain files only.", "series"
    elif what == "series":
        (upstream.base_folder / "series").unlink()
        (upstream.base_folder / "series").symlink_to(secret)
        expected = f"{upstream.base_folder / 'series'} is a symlink; the store holds plain files only"
        hint, failed = "hint: Replace the link by the file itself.", "series"
    else:
        real = tmp_path / "elsewhere"
        shutil.move(upstream.base_folder, real)
        upstream.base_folder.symlink_to(real)
        expected = f"{upstream.base_folder} is a symlink; the store holds plain folders only"
        hint, failed = "hint: Replace the link by the folder itself.", "config"
    before = outside(upstream, hermetic_seal)
    for command in ("check", "unpatch", "patch"):
        result = upstream.run(command)
        assert result.code == (3 if command == "patch" else 10), result.output
        if command == "check":
            assert expected in result.stdout
            assert error_lines(result) == [f"error: 1 check(s) failed: devA/demo-1.0 {failed}",
                                           hint]  # fmt: skip
        elif command == "unpatch":
            assert error_lines(result) == [f"error: {expected}", hint]
        else:  # patch stops earlier: there is no build tree
            assert error_lines(result) == [
                f"error: no build tree for device 'devA' under {upstream.build / 'devA'}",
                f"hint: Create one with `patchtool unpatch --device-type devA --dir "
                f"{upstream.build}`.",
            ]
        assert "do not read me" not in result.output
    assert outside(upstream, hermetic_seal) == before


def test_a_fifo_in_the_series_is_refused_without_waiting(upstream: SyntheticUpstream) -> None:
    os.mkfifo(upstream.base_folder / "fifo.patch")
    (upstream.base_folder / "series").write_text("fifo.patch\n")
    result = upstream.run("unpatch")
    assert result.code == 10
    assert error_lines(result) == [
        f"error: {upstream.base_folder / 'series'}:1: patch file 'fifo.patch' is a symlink or not "
        "a regular file",
        "hint: The store holds plain files only.",
    ]


# --------------------------------------------------------------------------- git's own reading


def test_rename_old_and_new_are_read_as_git_reads_them_by_check(upstream: SyntheticUpstream,
                                                                hermetic_seal: Path) -> None:  # fmt: skip
    shutil.copyfile(CORPUS / "patches" / "rename-old-symlink.patch",
                    upstream.base_folder / "rename-old-symlink.patch")  # fmt: skip
    (upstream.base_folder / "series").write_text("rename-old-symlink.patch\n")
    before = outside(upstream, hermetic_seal)
    result = upstream.run("check", "--json")
    assert result.code == 10, result.output

    safety = next(r for r in check_records(result.stdout) if r["check"] == "safety")
    path = upstream.base_folder / "rename-old-symlink.patch"
    assert safety["details"] == [
        f"patch {path} (series line 1): symlink 'passwd' -> '../README.md' points outside the tree"
    ]
    assert outside(upstream, hermetic_seal) == before


def make_origin(tmp_path: Path, links: dict[str, str]) -> tuple[Path, str]:
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "--quiet")
    (origin / "main.py").write_text("print('upstream')\n")
    for name, target in links.items():
        (origin / name).parent.mkdir(parents=True, exist_ok=True)
        (origin / name).symlink_to(target)
    git(origin, "add", "--all")
    git(origin, "commit", "--quiet", "-m", "upstream")
    return origin, git(origin, "rev-parse", "HEAD").strip()


@pytest.mark.parametrize(("links", "problem"), [
    ({"evil": "/etc/passwd"}, "symlink 'evil' -> '/etc/passwd' points to an absolute path"),
    ({"sub/up": "../../x"}, "symlink 'sub/up' -> '../../x' points outside the tree"),
    # Read as text 'b/../x' stays inside; the kernel follows b (-> .) first.
    ({"a": "b/../x", "b": "."}, "symlink 'a' -> 'b/../x' points outside the tree"),
    ({"hooks": ".git/hooks"}, "symlink 'hooks' -> '.git/hooks' points into .git"),
], ids=["absolute", "climbing", "through-another-link", "into-git"])  # fmt: skip
def test_a_git_base_with_a_symlink_out_of_the_tree_is_refused(upstream: SyntheticUpstream,
                                                              tmp_path: Path,
                                                              hermetic_seal: Path,
                                                              links: dict[str, str],
                                                              problem: str) -> None:  # fmt: skip
    origin, commit = make_origin(tmp_path, links)
    write_git_base(upstream, str(origin), commit)
    before = outside(upstream, hermetic_seal)
    result = upstream.run("unpatch", "--commit-id", "git-base")
    assert result.code == 10, result.output
    assert error_lines(result) == [f"error: base demo 2.0: {problem}", UNSAFE_HINT]
    assert sorted(p.name for p in (upstream.build / "devA").iterdir()) == [".patchtool.lock"]
    checked = upstream.run("check", "--commit-id", "git-base")
    assert checked.code == 10
    assert f"base demo 2.0: {problem}" in checked.stdout
    assert outside(upstream, hermetic_seal) == before


def test_a_relative_git_path_is_taken_from_the_base_folder(upstream: SyntheticUpstream,
                                                           tmp_path: Path) -> None:  # fmt: skip
    origin, commit = make_origin(tmp_path, {"docs/readme": "../main.py"})
    folder = write_git_base(upstream, os.path.relpath(origin, upstream.store / "devA" / "git-base"),
                      commit)  # fmt: skip
    result = upstream.run("unpatch", "--commit-id", "git-base")
    assert result.code == 0, result.output
    assert os.readlink(upstream.tree / "docs" / "readme") == "../main.py"
    assert (folder / "base.toml").read_text().count("url = \"../") == 1


# --------------------------------------------------------------------------- limits


def test_a_patch_past_the_devices_limits_is_refused_unread(upstream: SyntheticUpstream,
                                                           hermetic_seal: Path) -> None:  # fmt: skip
    big = upstream.base_folder / "huge.patch"
    with big.open("wb") as handle:
        handle.truncate(64 << 20)  # sparse: 64 MiB that cost nothing to make
    (upstream.base_folder / "series").write_text("huge.patch\n")
    before = outside(upstream, hermetic_seal)
    result = upstream.run("unpatch")
    assert result.code == 6
    assert error_lines(result) == [
        f"error: {big} is 67108864 bytes, more than the limit of 16777216",
        "hint: A patch's limits are set under [limits] in device.toml.",
    ]
    checked = upstream.run("check")
    assert checked.code == 6
    assert f"{big} is 67108864 bytes, more than the limit of 16777216" in checked.stdout
    assert outside(upstream, hermetic_seal) == before


def test_limits_from_device_toml_bound_hunks_and_files(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    core = upstream.tree / "demo" / "core.py"
    core.write_bytes(core.read_bytes().replace(b"return 1\n", b"return -1\n")
                     .replace(b"return 20\n", b"return -20\n")
                     .replace(b"return 39\n", b"return -39\n"))  # fmt: skip
    commit_all(upstream.tree, "Negate three functions")
    assert upstream.run("patch").code == 0
    device = upstream.store / "devA" / "device.toml"
    device.write_text(device.read_text() + "\n[limits]\npatch-hunks = 2\n")
    result = upstream.run("unpatch", "--force")
    assert result.code == 6
    patch = upstream.base_folder / "negate-three-functions.patch"
    assert error_lines(result) == [
        f"error: patch {patch}: 3 hunks, more than the limit of 2",
        "hint: Nothing was applied. Split the patch, or raise patch-hunks under [limits] in the "
        "device's device.toml if a patch this large is intended.",
    ]
    device.write_text(device.read_text().replace("patch-hunks = 2", "patch-hunks = 0"))
    result = upstream.run("unpatch", "--force")
    assert result.code == 6
    assert error_lines(result) == [  # no hint: the message says what to write
        f"error: {device}: key limits.'patch-hunks' must be a whole number from 1 to 1000000, "
        "not 0",
    ]


# --------------------------------------------------------------------------- lost work


def _popen(world: SyntheticUpstream, build: Path, *extra: str,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "patchtool", "--store", str(world.store), "patch",
         "--device-type", "devA", "--dir", str(build), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )  # fmt: skip


@pytest.mark.slow
def test_two_exports_from_two_build_folders_never_lose_work(upstream: SyntheticUpstream) -> None:
    builds = [upstream.root / "b1", upstream.root / "b2"]
    for round_number in range(8):
        for build in builds:
            made = upstream.run("unpatch", "--force", build=build)
            assert made.code == 0, made.output
            tree = build / "devA" / "demo"
            (tree / f"{build.name}-{round_number}.txt").write_text(f"{build.name}\n")
            commit_all(tree, f"Add {build.name} round {round_number}")
        runs = [_popen(upstream, build) for build in builds]
        results = [(run.wait(), run.stderr.read().decode()) for run in runs]  # type: ignore[union-attr]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 7], results
        winner, loser = builds if results[0][0] == 0 else builds[::-1]
        loser_error = next(err for code, err in results if code == 7)
        assert error_lines(loser_error) == stale_series_error(upstream, loser / "devA" / "demo")
        # The store is whole and holds exactly the winner's series.
        names = [line for line in (upstream.base_folder / "series").read_text().splitlines()
                 if not line.startswith("#")]  # fmt: skip
        expected = git(winner / "devA" / "demo", "log", "--reverse", "--format=%s",
                       "patchtool/base..HEAD").split("\n")  # fmt: skip
        assert len(names) == len([e for e in expected if e])
        assert sorted(p.name for p in upstream.base_folder.iterdir()) == sorted(
            ["base.toml", "series", *names])  # fmt: skip
        assert upstream.run("patch", "--check", build=winner).code == 0


def test_an_export_over_a_changed_series_is_refused_unless_forced(upstream: SyntheticUpstream) -> None:
    first, second = upstream.root / "b1", upstream.root / "b2"
    for build in (first, second):
        assert upstream.run("unpatch", build=build).code == 0
    (first / "devA" / "demo" / "one.txt").write_text("one\n")
    commit_all(first / "devA" / "demo", "Add one")
    assert upstream.run("patch", build=first).code == 0
    store = {p.name: p.read_bytes() for p in upstream.base_folder.iterdir()}
    (second / "devA" / "demo" / "two.txt").write_text("two\n")
    commit_all(second / "devA" / "demo", "Add two")
    refused = upstream.run("patch", build=second)
    assert refused.code == 7
    assert error_lines(refused) == stale_series_error(upstream, second / "devA" / "demo")
    assert {p.name: p.read_bytes() for p in upstream.base_folder.iterdir()} == store
    forced = upstream.run("patch", "--force", build=second)
    assert forced.code == 0, forced.output
    assert (upstream.base_folder / "series").read_text().split()[-1] == "add-two.patch"
    assert not (upstream.base_folder / "add-one.patch").exists()


def _paused_unpatch(world: SyntheticUpstream, tmp_path: Path,
                    point: str) -> tuple[subprocess.Popen[bytes], Path]:  # fmt: skip
    pause = tmp_path / "pause"
    pause.mkdir()
    os.mkfifo(pause / "reached")
    os.mkfifo(pause / "resume")
    run = subprocess.Popen(
        [sys.executable, "-m", "patchtool", "--store", str(world.store), "unpatch",
         "--device-type", "devA", "--dir", str(world.build)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", "PATCHTOOL_PAUSE_AT": point,
             "PATCHTOOL_PAUSE_DIR": str(pause)},
    )  # fmt: skip
    with (pause / "reached").open() as reached:
        assert reached.read() == point + "\n"  # the run waits at the point now
    return run, pause


def _resume(run: subprocess.Popen[bytes], pause: Path) -> tuple[int, str]:
    with (pause / "resume").open("w") as resume:
        resume.write("go\n")
    _, stderr = run.communicate()
    return run.returncode, stderr.decode()


def test_a_commit_made_while_unpatch_builds_is_seen_before_the_swap(upstream: SyntheticUpstream,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    assert upstream.run("unpatch").code == 0
    run, pause = _paused_unpatch(upstream, tmp_path, "unpatch:before-swap")
    (upstream.tree / "late.txt").write_text("made while unpatch ran\n")
    commit_all(upstream.tree, "Add late work")
    code, stderr = _resume(run, pause)
    assert code == 5, stderr
    late = git(upstream.tree, "rev-parse", "HEAD")[:10]
    assert error_lines(stderr) == [
        f"error: the build tree {upstream.tree} holds work that exists nowhere else:",
        f"  commits not exported to the store: {late} Add late work",
        "hint: Export it with `patchtool patch --device-type devA` (commit first, or use -m), or "
        "pass --force to move the old tree to a backup folder.",
    ]
    assert git(upstream.tree, "log", "-1", "--format=%s").strip() == "Add late work"
    assert [p.name for p in (upstream.build / "devA").iterdir()
            if p.name.startswith(".patchtool-stage")] == []  # fmt: skip


def test_a_commit_made_between_the_check_and_the_swap_goes_to_a_backup(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    assert upstream.run("unpatch").code == 0
    run, pause = _paused_unpatch(upstream, tmp_path, "unpatch:checked-again")
    (upstream.tree / "late.txt").write_text("made while unpatch swapped\n")
    commit_all(upstream.tree, "Add late work")
    code, stderr = _resume(run, pause)
    assert code == 0, stderr
    backups = list((upstream.build / "devA" / "backups").iterdir())
    assert len(backups) == 1
    assert stderr.count(f"the previous tree held unexported work; it was moved to {backups[0]}") == 1
    assert git(backups[0], "log", "-1", "--format=%s").strip() == "Add late work"
    assert not (upstream.tree / "late.txt").exists()
