"""The local key file: versioned master keys, the embedded default behind the KMS interface.

`<data_dir>/keys/master-keys.json` (or `Settings.encryption_key_file`), mode 0600 in a 0700
folder, holds for each master key id its versions and which one is current:

    {"format": 1, "keys": {"shipdelay": {"current": 2, "versions": {
        "1": {"created": "2026-01-05T10:00:00+00:00", "key": "<base64, 32 bytes>"},
        "2": {"created": "2026-04-05T10:00:00+00:00", "key": "..."}}}}}

New files are written with the current version; every version stays, so files written before a
rotation stay readable and history is never rewritten. The key file is the one thing that must
not be lost or copied next to the data it protects: back it up apart from the data folder.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FORMAT = 1
KEY_BYTES = 32  # AES-256


class EncryptionKeyError(RuntimeError):
    """The key file is missing, unreadable or lacks a key that data was written with."""


@dataclass(frozen=True)
class KeyVersion:
    key_id: str
    version: int
    created: str
    current: bool


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing; the leaf is made owner-only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


class KeyFile:
    """Read, create and rotate the versioned master keys of one key file."""

    def __init__(self, path: Path | str):
        self.path = Path(path).expanduser().absolute()

    # -- reading -------------------------------------------------------------------------------
    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise EncryptionKeyError(
                f"the key file {self.path} does not exist: restore it from its backup, or point "
                "SHIPDELAY_ENCRYPTION_KEY_FILE at the key file the data was written with") from None
        except (OSError, ValueError) as err:
            raise EncryptionKeyError(f"the key file {self.path} cannot be read ({err}): restore it "
                               "from its backup") from None
        if data.get("format") != FORMAT or not isinstance(data.get("keys"), dict):
            raise EncryptionKeyError(f"the key file {self.path} is not a shipdelay key file "
                               f"(format {FORMAT}): restore it from its backup")
        return data

    def exists(self) -> bool:
        return self.path.exists()

    def key(self, key_id: str, version: int) -> bytes:
        """The key bytes of one version (EncryptionKeyError naming what is missing)."""
        entry = self._load()["keys"].get(key_id)
        if entry is None or str(version) not in entry["versions"]:
            raise EncryptionKeyError(
                f"the key file {self.path} has no version {version} of master key '{key_id}', "
                "which this data was written with: point SHIPDELAY_ENCRYPTION_KEY_FILE at the key "
                "file the data was written with, or restore that key file from its backup")
        return base64.b64decode(entry["versions"][str(version)]["key"])

    def current(self, key_id: str) -> tuple[int, bytes]:
        """The version new files are written with, and its key."""
        entry = self._load()["keys"].get(key_id)
        if entry is None:
            raise EncryptionKeyError(f"the key file {self.path} has no master key '{key_id}': run "
                               "`shipdelay keys rotate` to add one")
        version = int(entry["current"])
        return version, base64.b64decode(entry["versions"][str(version)]["key"])

    def versions(self) -> list[KeyVersion]:
        out = []
        for key_id, entry in sorted(self._load()["keys"].items()):
            for v, item in sorted(entry["versions"].items(), key=lambda kv: int(kv[0])):
                out.append(KeyVersion(key_id, int(v), item["created"],
                                      int(v) == int(entry["current"])))
        return out

    # -- writing -------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (a lock file beside the key file), across processes."""
        private_dir(self.path.parent)
        fd = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _write(self, data: dict) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def ensure(self, key_id: str) -> None:
        """Create the key file with a first version of `key_id` when it has none (processes
        starting together create one key, not one each)."""
        if self.exists() and key_id in self._load()["keys"]:
            return
        with self._locked():
            data = self._load() if self.exists() else {"format": FORMAT, "keys": {}}
            if key_id not in data["keys"]:
                data["keys"][key_id] = {"current": 1, "versions": {"1": _new_version()}}
                self._write(data)

    def rotate(self, key_id: str) -> int:
        """Add a new version of `key_id` and make it current; older versions stay for reading.
        Returns the new version."""
        with self._locked():
            data = self._load() if self.exists() else {"format": FORMAT, "keys": {}}
            entry = data["keys"].setdefault(key_id, {"current": 0, "versions": {}})
            version = max((int(v) for v in entry["versions"]), default=0) + 1
            entry["versions"][str(version)] = _new_version()
            entry["current"] = version
            self._write(data)
        return version

    def stamp(self) -> tuple[int, int] | None:
        """(mtime_ns, size) of the key file: changes when it is rotated."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size


def _new_version() -> dict:
    return {"created": datetime.now(UTC).isoformat(timespec="seconds"),
            "key": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}
