"""Where compiled objects are kept, and how a kept object is known to be the one compiled.

Objects live in `<data_dir>/compiled/` (folder 0700, files 0600), named by the SHA-256 of the
model text and the machine key (`machine_key`: the CPU, the compiler versions and options the
code was built for), so that a data folder shared by different hosts never hands one host
another's code. A `Ledger` holds the SHA-256 of every object written; the loader compares a
file's digest with it before loading the file. The registry's ledger (`RegistryLedger`) keeps
the digests as tags of the model version, written through the registry client: whoever can
write the cache folder can replace a file there, but not the digest it must match. The folder
keeps the newest `KEEP_OBJECTS` objects.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Protocol

from serving import compile_worker

log = logging.getLogger(__name__)

# object files kept: the four boosters of the last four versions compiled (a version promoted
# again compiles again; a process that already loaded an object keeps it in memory)
KEEP_OBJECTS = 16
STALE_WORKDIR_SECONDS = 3600.0  # work folders of compiles whose process was killed


@functools.cache
def machine_key() -> str:
    """Names what an object's code depends on besides the model (`machine_identity`)."""
    identity = json.dumps(compile_worker.machine_identity(), sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class Ledger(Protocol):
    """Where the SHA-256 of each compiled object is recorded, out of the cache folder's reach."""

    def recorded(self, name: str) -> str | None: ...

    def record(self, name: str, sha256: str) -> None: ...


class MemoryLedger:
    """Digests known to this process only: nothing found on disk before is trusted."""

    def __init__(self) -> None:
        self.digests: dict[str, str] = {}

    def recorded(self, name: str) -> str | None:
        return self.digests.get(name)

    def record(self, name: str, sha256: str) -> None:
        self.digests[name] = sha256


class RegistryLedger:
    """Digests kept as tags of the model version in the registry, one per booster and
    machine key (`registry.register.record_compiled_hash`)."""

    def __init__(self, settings, version: str):
        self.settings, self.version = settings, str(version)
        self._tags: dict[str, str] | None = None
        self._lock = threading.Lock()

    def _key(self, name: str) -> str:
        return f"{name}.{machine_key()}"

    def recorded(self, name: str) -> str | None:
        from registry.loader import compiled_hashes

        with self._lock:
            if self._tags is None:
                try:
                    self._tags = compiled_hashes(self.settings, self.version)
                except Exception as err:  # noqa: BLE001 - then nothing on disk is trusted
                    log.warning("could not read compiled objects' digests of model version %s "
                                "from the registry (%s: %s); compiling its boosters again",
                                self.version, type(err).__name__, err)
                    self._tags = {}
            return self._tags.get(self._key(name))

    def record(self, name: str, sha256: str) -> None:
        from registry.register import record_compiled_hash

        record_compiled_hash(self.settings, self.version, self._key(name), sha256)
        with self._lock:
            if self._tags is not None:
                self._tags[self._key(name)] = sha256


def secure_cache(cache: Path) -> Path:
    """`cache` created if missing, readable and writable by its owner only."""
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(cache, 0o700)
    return cache


def object_path(cache: Path, model_text: str) -> Path:
    digest = hashlib.sha256(model_text.encode()).hexdigest()[:24]
    return cache / f"{digest}-{machine_key()}.o"


def prune(cache: Path, keep: int = KEEP_OBJECTS) -> None:
    """Remove all but the `keep` newest object files from `cache`, and work folders of
    compiles that were killed long ago."""
    def written(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile by another worker
            return float("inf")

    for old in sorted(cache.glob("*.o"), key=written, reverse=True)[keep:]:
        old.unlink(missing_ok=True)
    for folder in cache.glob("compile-*"):
        if time.time() - written(folder) > STALE_WORKDIR_SECONDS:
            shutil.rmtree(folder, ignore_errors=True)
