"""Where Optuna studies live (`shipdelay tune`): a journal file under the data folder (profile
`local`), or RDB storage on PostgreSQL, in schema `optuna` of the scale profile's database
(`shipdelay.backends`), with heartbeats so that trials of a dead worker are marked failed."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from shipdelay.backends import ensure_schema, optuna_url

HEARTBEAT_S = 30
GRACE_S = 120  # a trial without a heartbeat for this long belongs to a dead worker


def storage_url(settings: Any = None, storage: str | None = None) -> str:
    """Where studies live: the explicit `storage`, else Settings' (`optuna_storage`, else
    `postgres_url`, else a journal file under `<data_dir>/optuna/`)."""
    if storage:
        return optuna_url(storage)
    if settings is None:
        from shipdelay.settings import get_settings

        settings = get_settings()
    return settings.optuna_storage_url


def make_storage(url: str) -> BaseStorage:
    """The storage object for a `storage_url`: `journal:<path>` or a file path -> JournalStorage;
    an SQLAlchemy URL (`postgresql://...`, `sqlite:///...`) -> RDBStorage with heartbeats (on
    PostgreSQL in schema `optuna`, created if missing)."""
    if url.startswith("journal:"):
        return _journal(url.removeprefix("journal:"))
    if "://" not in url:
        return _journal(url)
    url = optuna_url(url)
    ensure_schema(url)
    with warnings.catch_warnings():
        # heartbeat_interval is still flagged experimental; we opt in on purpose.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True},
                          heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)


def _journal(path: str) -> JournalStorage:
    file = Path(path).expanduser()
    file.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(file)))


def resolve_storage(storage: str | BaseStorage | None, settings: Any = None) -> BaseStorage:
    if isinstance(storage, BaseStorage):
        return storage
    return make_storage(storage_url(settings, storage))
