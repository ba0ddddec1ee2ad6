"""Private patches: parts of a series kept in the store encrypted with age.

A private patch is a `<name>.patch.age` file in a base folder (store/private_file.py
reads its format): a clear header that a reviewer without the key reads (the subject,
the files it changes, the names of its recipients) and the patch itself, an
armored age file encrypted to the device's `[private.recipients]`.

Why age, through pyrage (the binding of the Rust implementation, rage):
it is authenticated encryption end to end (the header carries an HMAC over
every recipient stanza, the payload is ChaCha20-Poly1305 in 64 KiB chunks with
the last one marked), so a changed byte, a dropped chunk or a cut-short file is
refused, never decrypted into something else; recipients are plain public keys
(`age1...`, or the SSH keys people already have); and the files stay readable
with the `age` tool itself, without patchtool.

The plaintext lives in memory only. It is handed to git on standard input, so
on disk it exists only as the build tree git makes of it (and, during `check`,
its temporary tree, removed when the check ends); never in the store, the
cache or a temporary file of patchtool's own. Whenever a private patch is
decrypted its clear header is checked against it (the subject, and the files
git reads from it), so the header a reviewer reads cannot lie to anyone who
holds a key.

A commit in a build tree is exported as a private patch when its message has
the trailer `Patchtool-Private: yes`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchtool.core.errors import (
    IntegrityError,
    MissingKeyError,
    NotFoundError,
    UsageError,
    quoted,
)
from patchtool.core.fsutil import read_regular_file
from patchtool.series.safety import check_series_binary, check_size
from patchtool.store.files import read_store_file
from patchtool.store.model import (
    DEFAULT_LIMITS,
    SERIES_FILE,
    NamedRecipient,
    PatchLimits,
    PatchSeries,
    SeriesEntry,
)
from patchtool.store.private_file import PrivatePatch, parse_private_patch, render_private_patch

if TYPE_CHECKING:
    from patchtool.core.gitops import Git

IDENTITY_ENV = "PATCHTOOL_IDENTITY"
PRIVATE_TRAILER = "Patchtool-Private"
_IDENTITY_LIMIT = 1 << 16
_TRUE_VALUES = ("yes", "true")
TAMPER_HINT = (
    "Restore the file from the store's history (git log -p -- FILE), or have one of its "
    "recipients export the patch again."
)


# --------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class Keyring:
    """The user's identities, read from one file: what opens private patches."""

    source: Path
    identities: tuple[Any, ...]
    public_keys: frozenset[str]  # the recipients of its X25519 identities


def load_keyring(path: Path) -> Keyring:
    """An age identity file (`AGE-SECRET-KEY-1...` lines; `#` comments), or an
    unencrypted OpenSSH private key. Never shows a key in an error."""
    import pyrage

    try:
        # Named by the user (a link of theirs is followed), but still a regular
        # file read within a bound: a FIFO would hang, /dev/zero never end.
        data = read_regular_file(
            path, _IDENTITY_LIMIT, follow_symlinks=True, name=f"identity file {path}"
        )
    except NotFoundError as error:
        raise NotFoundError(
            error.message,
            hint=f"Name your age identity file with --identity or {IDENTITY_ENV}.",
        ) from error
    text = data.decode("utf-8", "replace")
    if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        try:
            ssh_identity = pyrage.ssh.Identity.from_buffer(data)
        except Exception as error:  # pyrage raises its own types and ValueError
            raise UsageError(
                f"identity file {path} is an SSH key pyrage cannot use ({type(error).__name__})",
                hint="A passphrase-protected key cannot be used: convert it to an age "
                "identity, or use an unprotected key kept for this purpose.",
            ) from None
        return Keyring(path, (ssh_identity,), frozenset())
    identities = []
    publics = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identity = pyrage.x25519.Identity.from_str(line)
        except Exception:
            raise UsageError(
                f"identity file {path}: line {number} is not an age identity",
                hint="An identity file holds AGE-SECRET-KEY-1... lines (as age-keygen writes "
                "them) or an OpenSSH private key.",
            ) from None
        identities.append(identity)
        publics.add(str(identity.to_public()))
    if not identities:
        raise UsageError(f"identity file {path} holds no identity")
    return Keyring(path, tuple(identities), frozenset(publics))


def write_new_identity(path: Path) -> str:
    """A new age X25519 identity written to `path` (created, never replaced; mode
    0600, as age-keygen makes it), in the file form `load_keyring` reads. Returns
    its recipient (`age1...`), the public key device.toml's recipients take."""
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = f"# public key: {recipient}\n{identity}\n".encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        raise UsageError(
            f"{path} exists; keygen never replaces a file (it may hold the only copy of a key)",
            hint="Name a new file, or move that one away yourself.",
        ) from None
    except FileNotFoundError:
        raise NotFoundError(
            f"cannot create {path}: its folder does not exist",
            hint="Create the folder first (e.g. `mkdir -p ~/.config/patchtool`).",
        ) from None
    try:
        os.fchmod(descriptor, 0o600)  # whatever the umask left
        os.write(descriptor, text)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return recipient


def find_keyring(option: Path | None, environ: Mapping[str, str] | None = None) -> Keyring | None:
    """The identity named by --identity, else by $PATCHTOOL_IDENTITY, else none."""
    environ = os.environ if environ is None else environ
    named = option if option is not None else environ.get(IDENTITY_ENV) or None
    return load_keyring(Path(named).expanduser()) if named is not None else None


# --------------------------------------------------------------------------- reading a series


@dataclass(frozen=True)
class SeriesPatch:
    """One patch of a series as git is given it: for a private patch, its
    plaintext (held in memory only)."""

    entry: SeriesEntry
    path: Path
    data: bytes
    stored_sha256: str  # of the file in the store (for a private patch: its ciphertext)
    description: PrivatePatch | None = None  # the clear header of a private patch

    @property
    def private(self) -> bool:
        return self.description is not None

    @property
    def label(self) -> str:
        return f"patch {self.path} (series line {self.entry.line})"


@dataclass(frozen=True)
class LoadedSeries:
    series: PatchSeries
    patches: tuple[SeriesPatch, ...]
    skipped: tuple[SeriesEntry, ...] = ()  # private patches left out (public part only)
    # The limits the patches were read within: what applying them may still refuse.
    limits: PatchLimits = DEFAULT_LIMITS

    def private_pairs(self) -> list[tuple[str, bytes]]:
        """(stored sha256, plaintext) of every private patch read."""
        return [(p.stored_sha256, p.data) for p in self.patches if p.private]

    def plaintext_digests(self) -> dict[str, str]:
        """stored sha256 -> plaintext sha256, for every private patch read."""
        return {stored: hashlib.sha256(plain).hexdigest() for stored, plain in self.private_pairs()}


def missing_key_error(
    base_label: str, entries: Sequence[SeriesEntry], device: str
) -> MissingKeyError:
    names = ", ".join(e.name for e in entries)
    return MissingKeyError(
        f"{base_label}: {len(entries)} private patch(es) need a key to read and were not "
        f"applied: {names}",
        hint=f"Name your age identity with --identity FILE or {IDENTITY_ENV}, or pass "
        f"--public-only to use the public patches only (`patchtool patch -d {device}` "
        "refuses to export from such a tree).",
    )


def load_series(
    series: PatchSeries,
    limits: PatchLimits,
    keyring: Keyring | None,
    recipients: Sequence[NamedRecipient] = (),
    public_only: bool = False,
) -> LoadedSeries:
    """Every patch of the series read as the store is read (no links, size
    limits), private ones decrypted in memory. Without a keyring the private
    patches are an error naming them all (exit 3), or with `public_only` left out."""
    private = [e for e in series.entries if e.private]
    skipped: tuple[SeriesEntry, ...] = ()
    if private and (public_only or keyring is None):
        if not public_only:
            raise missing_key_error(
                f"{series.base.device}/{series.base.base_id}", private, series.base.device
            )
        skipped = tuple(private)
    patches = []
    binary = 0  # what the series' binary hunks inflate to, together
    for entry in series.entries:
        if entry in skipped:
            continue
        path = series.base.path / entry.name
        if not entry.private:
            data = read_store_file(path, limits.patch_bytes)
            binary += check_size(f"patch {path}", data, limits).binary
            check_series_binary(f"{series.base.path / SERIES_FILE}", binary, limits)
            patches.append(SeriesPatch(entry, path, data, hashlib.sha256(data).hexdigest()))
            continue
        assert keyring is not None
        stored = read_store_file(path, stored_limit(limits))
        description = parse_private_patch(path, stored)
        plaintext = decrypt_patch(path, description, keyring, recipients)
        binary += check_size(f"patch {path}", plaintext, limits, private=True).binary
        check_series_binary(f"{series.base.path / SERIES_FILE}", binary, limits)
        patches.append(
            SeriesPatch(entry, path, plaintext, hashlib.sha256(stored).hexdigest(), description)
        )
    return LoadedSeries(series, tuple(patches), skipped, limits)


def stored_limit(limits: PatchLimits) -> int:
    """How large a private patch file may be: armor adds a third, age a little."""
    return limits.patch_bytes * 3 // 2 + (64 << 10)


def decrypt_patch(
    path: Path, private: PrivatePatch, keyring: Keyring, recipients: Sequence[NamedRecipient]
) -> bytes:
    import pyrage

    try:
        return pyrage.decrypt(private.armored, list(keyring.identities))
    except pyrage.DecryptError as error:
        reason = (str(error).splitlines() or ["no reason given"])[0]
        if reason != "No matching keys found":
            raise IntegrityError(
                f"{path}: cannot be decrypted: the file was changed or cut short (age: {reason})",
                hint=TAMPER_HINT,
            ) from None
        mine = [
            r.name
            for r in recipients
            if r.key in keyring.public_keys and r.name in private.recipients
        ]
        if mine:
            raise IntegrityError(
                f"{path}: cannot be decrypted, although it names {quoted(mine[0])} "
                f"(whose key is in {keyring.source}) as a recipient: the file was changed",
                hint=TAMPER_HINT,
            ) from None
        raise MissingKeyError(
            f"{path}: no identity in {keyring.source} opens it (its header names the "
            f"recipients {', '.join(private.recipients) or 'none'})",
            hint="Use the identity of one of its recipients, or ask one of them to add your "
            "public key to [private.recipients] in device.toml and run `patchtool patch`.",
        ) from None


def verify_description(git: Git, patch: SeriesPatch) -> None:
    """A private patch's clear header must say what its plaintext says: the same
    subject, and the files git reads from it, in git's order (exit 6 if not)."""
    from patchtool.series.safety import paths_git_reads

    described = patch.description
    if described is None:
        return
    subject = plaintext_subject(patch.data)
    files = tuple(paths_git_reads(git, patch.path, data=patch.data))
    problems = []
    if subject != described.subject:
        problems.append("its subject")
    if files != described.files:
        problems.append("the files it changes")
    if problems:
        raise IntegrityError(
            f"{patch.label}: the clear header does not match the encrypted patch "
            f"({' and '.join(problems)} differ): a reviewer would read something else than "
            "what is applied",
            hint="Export the patch again with `patchtool patch`, which writes the header "
            "from the patch.",
        )


def plaintext_subject(data: bytes) -> str:
    """A format-patch mail's subject, decoded and unfolded, without `[PATCH ...]`."""
    import email.parser  # only private patches need it: not at every start
    import email.policy

    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(data)
    subject = str(headers.get("subject", ""))
    return re.sub(r"^\s*(\[[^\]]*\]\s*)?", "", subject).strip()


# --------------------------------------------------------------------------- writing


def recipient_changes(
    encrypted_to: Sequence[str], names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """How a private patch file's recipients (its header's names) differ from
    those device.toml names: (stale, missing), the names it is encrypted to that
    device.toml no longer names, and those device.toml names that it is not
    encrypted to. The one comparison: lint reports it, the export re-encrypts on it."""
    stale = [name for name in encrypted_to if name not in names]
    missing = [name for name in names if name not in encrypted_to]
    return stale, missing


def seal(
    plaintext: bytes,
    subject: str,
    files: Sequence[str],
    recipients: Sequence[NamedRecipient],
    device_file: Path,
) -> bytes:
    """The bytes of a private patch file: the clear header and `plaintext`
    encrypted to every recipient of the device."""
    import pyrage

    if not recipients:
        raise UsageError(
            f"{device_file} names no [private.recipients]: a private patch cannot be encrypted",
            hint="Add the public keys that may read private patches, e.g. [private.recipients] "
            'vendor-ci = "age1..." (age-keygen prints one).',
        )
    keys: list[Any] = []
    for recipient in recipients:
        try:
            if recipient.key.startswith("age1"):
                keys.append(pyrage.x25519.Recipient.from_str(recipient.key))
            else:
                keys.append(pyrage.ssh.Recipient.from_str(recipient.key))
        except Exception:
            raise IntegrityError(
                f"{device_file}: private.recipients.{recipient.name} is not a usable public key"
            ) from None
    armored = pyrage.encrypt(plaintext, keys, armored=True)
    if not armored.endswith(b"\n"):
        armored += b"\n"
    return render_private_patch(
        PrivatePatch(subject, tuple(files), tuple(r.name for r in recipients), armored)
    )


def is_private_message(value: str, commit: str) -> bool:
    """Whether a commit's `Patchtool-Private:` trailer values mark it private."""
    values = [v.strip().lower() for v in value.split("\x02") if v.strip()]
    if not values:
        return False
    if any(v not in _TRUE_VALUES and v not in ("no", "false") for v in values):
        raise UsageError(
            f"commit {commit[:10]} has a {PRIVATE_TRAILER}: trailer with a value other "
            "than yes or no",
            hint=f"Write `{PRIVATE_TRAILER}: yes` to keep the patch private.",
        )
    return values[-1] in _TRUE_VALUES


def private_record(
    git: Git, private: Sequence[tuple[str, bytes]]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """What a build tree's record keeps of its private patches, given as (stored
    sha256, plaintext): stored sha256 -> plaintext sha256, and the patch-ids of
    their changes (see trees.record.TreeRecord)."""
    digests = {stored: hashlib.sha256(plain).hexdigest() for stored, plain in private}
    ids = tuple(i for i in patch_ids(git, [plain for _, plain in private]) if i)
    return digests, ids


def patch_ids(git: Git, patches: Sequence[bytes]) -> list[str | None]:
    """git's stable patch-id of each patch (None for one without a diff): the
    same for the same change whatever its message, line numbers or whitespace."""
    if not patches:
        return []
    stream = bytearray()
    for index, data in enumerate(patches):
        # Each patch gets its index as its "From <commit>" line, so that the
        # answers can be told apart (exported patches all carry zero ids).
        first, _, rest = data.partition(b"\n")
        if re.match(rb"^From [0-9a-f]{40} ", first):
            data = rest
        stream += b"From %040x Mon Sep 17 00:00:00 2001\n" % (index + 1) + data
        if not data.endswith(b"\n"):
            stream += b"\n"
    out = git.run("patch-id", "--stable", input=bytes(stream)).text
    found: list[str | None] = [None] * len(patches)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            index = int(parts[1], 16) - 1
            if 0 <= index < len(patches):
                found[index] = parts[0]
    return found
