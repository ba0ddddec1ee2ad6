"""What a FlagScale `hardware/` tree is read into, and the facts about FlagScale
that the reading needs (its file names, its backends, its devices' vendors).

The layouts (the folder names are FlagScale's, such as `Metax_C550`):

    hardware/<Device>/<backend>/diff.yaml           the metadata of the current layout
    hardware/<Device>/<backend>/diff.patch          one squashed `git diff --binary`, -p1
    hardware/<Device>/<backend>/diff.patch.encrypted  the same, encrypted (decryption.py)
    hardware/<Device>/<backend>/<path>.patch        or one single-file `git diff` per
                                                    changed file (`.patch.encrypted` too)
    hardware/<Device>/<commit>/<commit>.patch       legacy: one squashed `git
                                                    format-patch` against FlagScale's root,
                                                    vLLM under `vllm/`
    hardware/patch_history.yaml                     <Device>: <task>: <backends>: [commits]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Layout = Literal["diff", "encrypted", "per-file", "legacy"]

HARDWARE = "hardware"
DIFF_YAML = "diff.yaml"
DIFF_PATCH = "diff.patch"
ENCRYPTED_SUFFIX = ".encrypted"
PATCH_SUFFIX = ".patch"
HISTORY_YAML = "patch_history.yaml"
KEY_FILE = "private_key.pem"  # what FlagScale's --key-path folder holds

# Used when neither the tree nor its git history says: the patch's body says so.
PLACEHOLDER_AUTHOR = "FlagScale vendor <vendor@flagscale.invalid>"
PLACEHOLDER_DATE = "1970-01-01T00:00:00Z"
UPSTREAM_STATUS = "Pending"

# Bounds on the work an untrusted tree can cause.
YAML_LIMIT = 1 << 20
KEY_LIMIT = 1 << 20
PATCH_LIMIT = 16 << 20  # one patch file (the store's default patch-bytes)
SET_BYTES_LIMIT = 256 << 20  # all patch files of one device and backend together
SET_FILES_LIMIT = 20000  # changed files of one device and backend
DEPTH_LIMIT = 32  # folder levels of a per-file layout
TEXT_LIMIT = 200  # characters of a model, task, contact or author value
# A group of files whose patch is larger than this is split (import --group-bytes).
DEFAULT_GROUP_BYTES = 256 << 10


@dataclass(frozen=True)
class Backend:
    """A project FlagScale patches, under the folder name FlagScale gives it."""

    name: str  # FlagScale's folder name, and the store's project name
    repository: str  # where its history lives
    package_folders: tuple[str, ...]  # under these, files group by the second level too
    sdist: str | None = None  # the package its releases are published as; None: git only
    # The sdist holds this folder of the repository as its top (sglang's python/);
    # a fallback to the sdist is refused for a set that changes files outside it.
    sdist_root: str = ""


BACKENDS: Mapping[str, Backend] = {
    "vllm": Backend("vllm", "https://github.com/vllm-project/vllm.git", ("vllm",), "vllm"),
    "sglang": Backend(
        "sglang",
        "https://github.com/sgl-project/sglang.git",
        ("python/sglang", "sglang"),
        "sglang",
        sdist_root="python/",
    ),
    "Megatron-LM": Backend(
        "Megatron-LM", "https://github.com/NVIDIA/Megatron-LM.git", ("megatron",)
    ),
    "Megatron-Energon": Backend(
        "Megatron-Energon", "https://github.com/NVIDIA/Megatron-Energon.git", ("megatron",)
    ),
    "FlagScale": Backend("FlagScale", "https://github.com/FlagOpen/FlagScale.git", ("flagscale",)),
}
# FlagScale's own spellings of backend names (its tools/patch normalizes them the same way).
BACKEND_ALIASES: Mapping[str, str] = {
    "megatron": "Megatron-LM",
    "megatron-lm": "Megatron-LM",
    "energon": "Megatron-Energon",
    "megatron-energon": "Megatron-Energon",
    "fs": "FlagScale",
    "flagscale": "FlagScale",
    "vllm": "vllm",
    "sglang": "sglang",
}
FLAGSCALE_BACKEND = "FlagScale"
LEGACY_BACKEND = "vllm"
LEGACY_PREFIX = "vllm/"

# patchtool's store already names some devices FlagScale also carries; those
# FlagScale folders import into the existing device (keys compared casefolded).
DEVICE_NAMES: Mapping[str, str] = {"metax_c550": "metax_C550"}
# Who makes each device FlagScale carries (its folder names say it only in part:
# "BI" is Iluvatar CoreX's, "MUSA" Moore Threads'). Keys compared casefolded.
VENDORS: Mapping[str, str] = {
    "bi_v150": "Iluvatar CoreX",
    "cambricon_mlu": "Cambricon",
    "huawei_atlas800ta3": "Huawei",
    "hygon_bw1000": "Hygon",
    "kunlunxin_r310p": "Kunlunxin",
    "metax_c550": "MetaX",
    "musa_s5000": "Moore Threads",
    "tsing_micro": "TsingMicro",
}
UNKNOWN_VENDOR = "unknown"


def canonical_backend(name: str) -> str:
    return BACKEND_ALIASES.get(name.casefold(), name)


def store_device(flagscale_device: str) -> str:
    """The store's name for a FlagScale device folder."""
    return DEVICE_NAMES.get(flagscale_device.casefold(), flagscale_device)


def vendor_of(flagscale_device: str) -> str | None:
    return VENDORS.get(flagscale_device.casefold())


@dataclass(frozen=True)
class FilePatch:
    """One file's change, with what git reads it to do."""

    path: str  # backend-relative: the new name (the old one for a deletion)
    text: bytes  # one `diff --git` section, as the set's `strip` reads it
    source: str  # the FlagScale-relative file it came from
    status: Literal["added", "deleted", "modified", "renamed"] = "modified"
    old_path: str | None = None  # a rename's old name


@dataclass(frozen=True)
class Authorship:
    """Who made a patch and when: from FlagScale's git history (the commit that
    last touched its source files), a mail, or diff.yaml's contact; `known` is
    false where none says and the placeholders stand."""

    author: str  # "Name <email>"
    date: str  # ISO 8601
    known: bool
    how: str  # one sentence for the patch's body: where the author and date come from


@dataclass(frozen=True)
class PatchGroup:
    """One patch of the new series: files of one component (or a part of one)."""

    component: str  # e.g. "vllm/model_executor", "csrc", "setup.py"
    subject: str
    body: str  # names the sources and the FlagScale commit; ends with Upstream-Status:
    files: tuple[FilePatch, ...]
    authorship: Authorship

    def diff(self) -> bytes:
        """The group's files as one `git diff` text."""
        return b"".join(file.text for file in self.files)

    @property
    def message(self) -> str:
        return f"{self.subject}\n\n{self.body}"

    @property
    def encrypted(self) -> bool:
        """Some of its files came from FlagScale's encrypted files: it becomes a
        private patch of the store."""
        return any(f.source.endswith(ENCRYPTED_SUFFIX) for f in self.files)


@dataclass(frozen=True)
class BackendSet:
    """One device and backend of the FlagScale tree: a series to import, or
    (`problem`) why it cannot be read."""

    device: str  # patchtool's device name (see DEVICE_NAMES)
    flagscale_device: str  # FlagScale's folder name
    backend: str  # FlagScale's backend folder name: vllm, sglang, Megatron-LM, FlagScale
    source: str  # the FlagScale-relative folder read, e.g. "hardware/Metax_C550/vllm"
    layout: Layout | None = None  # None: not read far enough to say
    vendor: str | None = None  # who makes the device (VENDORS); None: not known
    version: str | None = None  # the backend's release version, normalized
    version_text: str | None = None  # diff.yaml's version as written, when not a release
    commit: str | None = None  # the backend's full commit the patch was made on
    flagscale_commit: str | None = None  # diff.yaml's `commit`: FlagScale's base
    history_commit: str | None = None  # the newest commit patch_history.yaml lists for it
    strip: int = 1  # the -p the patches are read with (2 for the legacy vllm/ prefix)
    contact: str | None = None
    models: tuple[str, ...] = ()
    task: tuple[str, ...] = ()
    groups: tuple[PatchGroup, ...] = ()
    skipped: tuple[str, ...] = ()  # what was not read, and why
    notes: tuple[str, ...] = ()  # where a value is a placeholder or was interpreted
    problem: str | None = None  # why the set cannot be imported at all
    problem_hint: str | None = None
    problem_code: int = 0  # the exit code of that failure (errors.ExitCode)
    encrypted_unread: bool = False  # encrypted files no key given opens

    @property
    def project(self) -> str:
        """The store's project of the set's bases."""
        return self.backend

    @property
    def backend_info(self) -> Backend | None:
        return BACKENDS.get(self.backend)

    @property
    def files(self) -> int:
        return sum(len(group.files) for group in self.groups)
