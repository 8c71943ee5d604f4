"""Encryption at rest: every Parquet file shipdelay writes is encrypted (Parquet modular
encryption, Arrow's key tools), and reading it needs the master key.

Envelope encryption: each file gets its own random data key (AES-256-GCM, footer and every
column); data keys are wrapped by key-encryption keys, which the KMS wraps with a master key
(double wrapping: one KMS call per key-encryption key, not per file). The wrapped keys live in
the file's encrypted footer and name the master key id; the KMS's wrapped text names the master
key version, so a rotated master key only changes new files: old files keep naming the version
that wrapped them and stay readable. Nothing is rewritten.

The KMS is an interface: `Settings.encryption_kms` is the class path of a
`pyarrow.parquet.encryption.KmsClient` subclass, built with a `KmsConnectionConfig` carrying
`encryption_kms_url`, `encryption_kms_token` and `custom_kms_conf["key_file"]`. The embedded
default, `LocalKeyFileKms`, keeps versioned master keys in a local key file (shipdelay.keyring);
a production KMS (HashiCorp Vault transit, AWS KMS) implements `wrap_key(key_bytes, key_id)` and
`unwrap_key(wrapped, key_id)` by calling its encrypt and decrypt APIs (both already put the key
version in their ciphertext) and is named in `SHIPDELAY_ENCRYPTION_KMS`.

Encryption is configured per process, from the environment (`SHIPDELAY_ENCRYPTION`,
`SHIPDELAY_ENCRYPTION_KEY_FILE`, ...), like the file permissions: every writer and reader of the
process uses `active()`. Readers and writers call it through `shipdelay.parquet_io`.
"""

from __future__ import annotations

import base64
import importlib
import os
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shipdelay.keyring import EncryptionKeyError, KeyFile, private_dir
from shipdelay.settings import Settings, get_settings

__all__ = [
    "Encryption",
    "EncryptionKeyError",
    "LocalKeyFileKms",
    "active",
    "private_dir",
    "private_files",
]

KEY_CACHE = timedelta(minutes=10)  # how long a key-encryption key is reused for new files
LOCAL_KMS = "shipdelay.crypto.LocalKeyFileKms"


class LocalKeyFileKms(pe.KmsClient):
    """The embedded KMS: AES-256-GCM key wrapping with the versioned master keys of a local key
    file. Wrapped text: `<key id>:v<version>:<base64 nonce+ciphertext>`, the id and version
    bound to the ciphertext as associated data."""

    def __init__(self, config: pe.KmsConnectionConfig):
        super().__init__()
        self.keys = KeyFile(config.custom_kms_conf["key_file"])

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        self.keys.ensure(master_key_identifier)
        version, master = self.keys.current(master_key_identifier)
        nonce = os.urandom(12)
        label = f"{master_key_identifier}:v{version}"
        sealed = AESGCM(master).encrypt(nonce, key_bytes, label.encode())
        return f"{label}:{base64.b64encode(nonce + sealed).decode()}"

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        key_id, version, blob = wrapped_key.rsplit(":", 2)
        if key_id != master_key_identifier or not version.startswith("v"):
            raise EncryptionKeyError(f"a file names master key '{master_key_identifier}' but "
                                     f"its key was wrapped as '{key_id}:{version}'")
        raw = base64.b64decode(blob)
        master = self.keys.key(key_id, int(version[1:]))
        try:
            return AESGCM(master).decrypt(raw[:12], raw[12:], f"{key_id}:{version}".encode())
        except InvalidTag:
            raise EncryptionKeyError(
                f"the key file {self.keys.path} holds another {version} of master key "
                f"'{key_id}' than the one this data was written with: point "
                "SHIPDELAY_ENCRYPTION_KEY_FILE at the key file the data was written with, or "
                "restore that key file from its backup") from None


def _kms_class(path: str) -> type[pe.KmsClient]:
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise EncryptionKeyError(f"SHIPDELAY_ENCRYPTION_KMS names {path!r}, which cannot be "
                                 "imported: give the class path of a KmsClient") from None
    if not (isinstance(cls, type) and issubclass(cls, pe.KmsClient)):
        raise EncryptionKeyError(f"SHIPDELAY_ENCRYPTION_KMS names {path!r}, which is not a "
                                 "pyarrow.parquet.encryption.KmsClient subclass")
    return cls


@dataclass(frozen=True)
class Encryption:
    """One process's encryption: the KMS, the master key id, the key file of the local KMS."""

    key_file: Path
    key_id: str = "shipdelay"
    kms: str = LOCAL_KMS
    kms_url: str | None = None
    kms_token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Encryption:
        token = settings.encryption_kms_token
        return cls(settings.key_file, settings.encryption_key_id, settings.encryption_kms,
                   settings.encryption_kms_url, token.get_secret_value() if token else None)

    @property
    def local(self) -> bool:
        return self.kms == LOCAL_KMS

    def connection(self) -> pe.KmsConnectionConfig:
        return pe.KmsConnectionConfig(
            kms_instance_url=self.kms_url or "", key_access_token=self.kms_token or "DEFAULT",
            custom_kms_conf={"key_file": str(self.key_file)})

    def factory(self) -> pe.CryptoFactory:
        """The crypto factory; for the local KMS a new one whenever the key file changes, so
        that a rotation is used at once (a factory caches its key-encryption keys)."""
        stamp = KeyFile(self.key_file).stamp() if self.local else None
        return _factory(self, stamp)

    def encryption_properties(self):
        """Fresh properties for one file written (its own data key)."""
        config = pe.EncryptionConfiguration(
            footer_key=self.key_id, uniform_encryption=True, plaintext_footer=False,
            double_wrapping=True, internal_key_material=True, cache_lifetime=KEY_CACHE,
            data_key_length_bits=256)
        return self.factory().file_encryption_properties(self.connection(), config)

    def decryption_properties(self):
        config = pe.DecryptionConfiguration(cache_lifetime=KEY_CACHE)
        return self.factory().file_decryption_properties(self.connection(), config)

    def file_format(self) -> ds.ParquetFileFormat:
        """A Parquet format for Arrow datasets that decrypts what it reads."""
        config = ds.ParquetDecryptionConfig(self.factory(), self.connection(),
                                            pe.DecryptionConfiguration(cache_lifetime=KEY_CACHE))
        return ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(
            decryption_config=config))


@lru_cache(maxsize=8)
def _factory(enc: Encryption, stamp) -> pe.CryptoFactory:
    """One factory per configuration and key file state: a factory caches KMS clients and
    key-encryption keys, which belong to one key file."""
    cls = _kms_class(enc.kms)
    return pe.CryptoFactory(lambda config: cls(config))


@lru_cache(maxsize=8)
def _encryption(enabled: bool, key_file: Path, key_id: str, kms: str, url, token):
    return Encryption(key_file, key_id, kms, url, token) if enabled else None


def active(settings: Settings | None = None) -> Encryption | None:
    """The process's encryption (None when `SHIPDELAY_ENCRYPTION` is off)."""
    s = settings or get_settings()
    token = s.encryption_kms_token.get_secret_value() if s.encryption_kms_token else None
    return _encryption(s.encryption, s.key_file, s.encryption_key_id, s.encryption_kms,
                       s.encryption_kms_url, token)


def private_files() -> None:
    """Files and folders this process creates from now on are its owner's only (0600, 0700):
    the lake, the stores, the keys, the scores, the logs, the MLflow database."""
    os.umask(0o077)


def rotate(settings: Settings | None = None) -> int:
    """A new version of the master key becomes current: files written from now on use it, files
    written before keep naming the version that wrapped them (nothing is rewritten)."""
    enc = Encryption.from_settings(settings or get_settings())
    if not enc.local:
        raise EncryptionKeyError(f"master keys live in the KMS {enc.kms}: rotate them there; new "
                                 "files use its current version")
    return KeyFile(enc.key_file).rotate(enc.key_id)


def status(settings: Settings | None = None) -> tuple[Encryption, list]:
    """The process's encryption and, for the local KMS, every master key version."""
    s = settings or get_settings()
    enc = Encryption.from_settings(s)
    keys = KeyFile(enc.key_file)
    return enc, (keys.versions() if enc.local and keys.exists() else [])
