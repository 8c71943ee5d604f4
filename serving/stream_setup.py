"""Put a feature store back to a moment in the past, so the lake's later events can be streamed
through it: for the stream demo, load tests and the stream's own tests.

`rewind(settings, cut)` recomputes shipment progress from the lake's events ingested before
`cut` (the backfill function), makes that the offline view, replaces the online progress of
every shipment with it, puts the online statistics and weather back to their rows at `cut`
(`features.roll.reset_online`) and clears the stream's per-shipment state. Profiles and the
offline statistics are left as they are. `workspace` makes a scratch copy of a built data
directory to rewind: the lake, the other offline views and the model registry are shared or
copied, never changed (the offline roll mark is copied: it is past any cut, so the stream only
rolls the copy's online store); the Feast definitions are applied again so that every source
points into the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from features import marks
from features import offline as off
from features.build import EVENT_COLUMNS, progress_chunks
from features.online_direct import RedisOnline, SqliteOnline, entity_keys, open_direct
from features.roll import reset_online
from features.schema import SHIPMENT_PROGRESS, VIEWS
from features.store import feast_dir, get_store, offline_dir
from features.transforms import latest
from shipdelay.lake import Lake
from shipdelay.settings import Settings

PROGRESS = "shipment_progress"
WRITE_CHUNK = 5_000


def workspace(source: Settings, target: Path, **overrides) -> Settings:
    """A data directory at `target` that shares `source`'s lake and offline views (linked) and
    has its own copy of the model registry, the Feast registry and the SQLite online store, and
    of the trees this machine compiled (the registry copy holds their digests, so a stream
    started there loads them instead of compiling again)."""
    (target / "feast" / "offline").mkdir(parents=True, exist_ok=True)
    (target / "lake").symlink_to(source.lake_dir.resolve())
    for name in ("mlflow.db",):
        if (source.data_dir / name).exists():
            shutil.copy2(source.data_dir / name, target / name)
    for folder in ("models", "compiled"):
        if (source.data_dir / folder).exists():
            shutil.copytree(source.data_dir / folder, target / folder)
    for name in ("registry.db", "online.db"):
        if (feast_dir(source) / name).exists():
            shutil.copy2(feast_dir(source) / name, target / "feast" / name)
    for view in VIEWS:
        if view != PROGRESS and (offline_dir(source) / view).exists():
            (target / "feast" / "offline" / view).symlink_to((offline_dir(source) / view).resolve())
    (target / "feast" / "offline" / PROGRESS).mkdir(parents=True, exist_ok=True)
    mark = marks.offline_mark(offline_dir(source))
    if mark is not None:
        marks.set_offline_mark(target / "feast" / "offline", mark)
    settings = Settings(data_dir=target, **overrides)
    from features.repo.definitions import definitions

    get_store(settings).apply(definitions(offline_dir(settings)))  # sources in this copy
    return settings


def progress_before(settings: Settings, cut: pd.Timestamp) -> pd.DataFrame:
    """Every progress row the backfill gives for the lake's events ingested before `cut`."""
    lake = Lake(settings.lake_dir)
    events = lake.read("tracking_events", columns=EVENT_COLUMNS)
    events = events[events["ingested_at"] < cut]
    profile = off.read_view(offline_dir(settings), "shipment_profile")
    profile = profile.sort_values("event_timestamp").drop_duplicates("shipment_id", keep="last")
    return pd.concat(list(progress_chunks(events, profile)), ignore_index=True)


def rewind(settings: Settings, cut: pd.Timestamp) -> pd.DataFrame:
    """Offline and online shipment progress as of `cut`; the stream state cleared. Returns
    the latest progress row per shipment now online."""
    states = progress_before(settings, cut)
    target = offline_dir(settings) / PROGRESS
    if target.is_symlink():
        target.unlink()
    off.replace_view(offline_dir(settings), PROGRESS, states)
    now = latest(states)
    online = open_direct(settings)
    try:
        _clear_progress(online, settings)
        for lo in range(0, len(now), WRITE_CHUNK):
            online.write(PROGRESS, now.iloc[lo:lo + WRITE_CHUNK])
        # statistics and weather online as they were at the cut too (the offline store keeps
        # its later rows: the stream rolls the online store forward through them)
        reset_online(online, offline_dir(settings), cut)
    finally:
        online.close()
    return now


def _clear_progress(online, settings: Settings) -> None:
    from serving.stream_store import STATE_FIELDS, StreamStore  # creates the stream tables

    StreamStore(online)
    if isinstance(online, SqliteOnline):
        for table in (f"shipdelay_{PROGRESS}", "shipdelay_stream_state",
                      "shipdelay_stream_commits"):
            online.conn.execute(f'DELETE FROM "{table}"')
        return
    from feast.infra.online_stores.helpers import _mmh3

    profile = off.read_view(offline_dir(settings), "shipment_profile")
    ids = profile["shipment_id"].astype(str).unique().tolist()
    fields = [_mmh3(f"{PROGRESS}:{c}") for c in SHIPMENT_PROGRESS]
    fields += [f"_ts:{PROGRESS}".encode(), *STATE_FIELDS]
    assert isinstance(online, RedisOnline)
    pipe = online.client.pipeline(transaction=False)
    for i, key in enumerate(entity_keys("shipment_id", ids)):
        pipe.hdel(RedisOnline.redis_key(key), *fields)
        if i % 5_000 == 4_999:
            pipe.execute()
    pipe.execute()
    for key in online.client.scan_iter(match="shipdelay:stream:commit:*"):
        online.client.delete(key)
