"""FlagScale's encrypted patches, decrypted in memory with the vendors' keys.

An encrypted file is `iv (16 bytes) || RSA-OAEP-SHA256(AES-256 key) ||
AES-256-CBC(patch, PKCS#7)`; the RSA block is as long as the key (512 bytes for
FlagScale's 4096-bit keys). Each vendor encrypts to a key of its own, so
several keys may be given: a file is opened by the key whose RSA block it
holds, and a file no key opens is not an error of the run (its set is skipped:
it is encrypted to someone else). The format has no integrity check, so a
file a key opens but that is damaged shows as bad padding here, or as text
that is not a diff where it is read (sections.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from patchtool.core.errors import IntegrityError, UsageError
from patchtool.core.fsutil import read_regular_file
from patchtool.vendors.flagscale.model import KEY_FILE, KEY_LIMIT

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

IV_BYTES = 16
AES_BLOCK = 16


@dataclass(frozen=True)
class VendorKey:
    """One vendor's RSA private key."""

    key: RSAPrivateKey
    shown: str  # the file it came from, for messages

    def open(self, data: bytes) -> bytes | None:
        """The AES key of an encrypted file, or None when the file is not
        encrypted to this key (its RSA block does not fit or does not open)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        wrapped_length = (self.key.key_size + 7) // 8
        body_length = len(data) - IV_BYTES - wrapped_length
        if body_length < AES_BLOCK or body_length % AES_BLOCK:
            return None
        wrapped = data[IV_BYTES : IV_BYTES + wrapped_length]
        try:
            return self.key.decrypt(
                wrapped,
                padding.OAEP(
                    mgf=padding.MGF1(algorithm=hashes.SHA256()),
                    algorithm=hashes.SHA256(),
                    label=None,
                ),
            )
        except ValueError:
            return None


@dataclass(frozen=True)
class VendorKeys:
    """The keys given with --private-key, tried in turn on each encrypted file."""

    keys: tuple[VendorKey, ...] = ()

    def describe(self) -> str:
        if not self.keys:
            return "no key was given"
        if len(self.keys) == 1:
            return f"it is not encrypted to the key {self.keys[0].shown}"
        return f"it is not encrypted to any of the {len(self.keys)} keys given"

    def decrypt(self, data: bytes, source: str) -> bytes | None:
        """The plaintext, or None when no key opens the file."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.padding import PKCS7

        for key in self.keys:
            aes_key = key.open(data)
            if aes_key is None:
                continue
            if len(aes_key) != 32:
                raise IntegrityError(f"{source}: its AES key is {len(aes_key)} bytes, not 32")
            wrapped_length = (key.key.key_size + 7) // 8
            iv = data[:IV_BYTES]
            body = data[IV_BYTES + wrapped_length :]
            decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
            padded = decryptor.update(body) + decryptor.finalize()
            unpadder = PKCS7(128).unpadder()
            try:
                return unpadder.update(padded) + unpadder.finalize()
            except ValueError as error:
                raise IntegrityError(
                    f"{source}: decrypts with {key.shown} to a bad PKCS#7 padding",
                    hint="The file is damaged (FlagScale's encryption has no integrity check).",
                ) from error
        return None


def load_private_keys(paths: Sequence[Path]) -> VendorKeys:
    """Each key file (or folder holding FlagScale's private_key.pem), read as the
    user names it; the same key given twice counts once."""
    keys: list[VendorKey] = []
    seen: set[int] = set()
    for path in paths:
        key = _load_private_key(path)
        number = key.key.private_numbers().public_numbers.n
        if number not in seen:
            seen.add(number)
            keys.append(key)
    return VendorKeys(tuple(keys))


def _load_private_key(path: Path) -> VendorKey:
    if path.is_dir():
        path = path / KEY_FILE
    # Named by the user (a link of theirs is followed), read as every named file is.
    data = read_regular_file(
        path,
        KEY_LIMIT,
        follow_symlinks=True,
        name=f"private key {path}",
        limit_hint="A PEM private key is a few KiB: name the key file itself.",
    )
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(data, password=None)
    except TypeError as error:
        raise UsageError(
            f"private key {path} is protected by a password",
            hint="Give an unencrypted copy of the key, kept outside the repository.",
        ) from error
    except (ValueError, UnsupportedAlgorithm) as error:
        raise UsageError(f"{path} is not a PEM private key") from error
    if not isinstance(key, RSAPrivateKey):
        raise UsageError(f"{path} is not an RSA private key; FlagScale encrypts with RSA")
    return VendorKey(key, str(path))
