"""The direct online reader returns exactly what Feast's `get_online_features` path returns.

`features.online_fast.OnlineReader.vectors` against `features.online.online_vectors` on a built
feature store, SQLite and the local Redis server: known in-flight shipments (before and after
their first scan), unknown ids, delivered shipments, a repeated id, and a value streamed in after
the reader was built. The bulk value decoder is checked value by value against Feast's own
converter, and the entity keys against Feast's serializer.
"""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import FloatList, Value

from features import offline as off
from features.build import build_features
from features.online import online_vectors, vector_columns
from features.online_decode import (
    DirectReadUnsupported,
    columns,
    decode,
    decode_cells,
    feast_value,
)
from features.online_fast import OnlineReader, _keys
from features.repo.definitions import definitions
from features.schema import TIMESTAMP
from features.store import get_store, offline_dir
from features.transforms import latest
from serving.demo import in_flight
from shipdelay.lake import Lake
from shipdelay.settings import Settings
from tests.conftest import services_required

warnings.filterwarnings("ignore", category=DeprecationWarning)
UNKNOWN = "SH-NO-SUCH-SHIPMENT"


# ------------------------------------------------------------------ the decoder, value by value
def _blobs() -> list[bytes]:
    values = [Value()]  # missing
    values += [Value(double_val=x) for x in (0.0, -0.0, 1.5, -2.25e-300, 1e308, math.inf,
                                             -math.inf, math.nan, 3.141592653589793)]
    values += [Value(int64_val=x) for x in (0, 1, -1, 127, 128, 300, -300, 2**31, -(2**40),
                                            2**53 - 1, -(2**53 - 1), 2**53, 2**63 - 1, -(2**63))]
    values += [Value(int32_val=x) for x in (0, 5, -5, 2**31 - 1, -(2**31))]
    values += [Value(string_val=x) for x in ("", "truck", "São Paulo→Ünïcode", "x" * 125,
                                             "y" * 126, "z" * 200)]
    values += [Value(bool_val=True), Value(float_val=0.1), Value(unix_timestamp_val=1_700_000_000),
               Value(float_list_val=FloatList(val=[1.0, 2.0]))]
    return [v.SerializeToString() for v in values]


def _same_value(ours, feast) -> bool:
    """Equal as a frame holds them: a missing value and NaN are both NaN in a float column."""
    if feast is None or (isinstance(feast, float) and math.isnan(feast)):
        return ours is None or (isinstance(ours, float) and math.isnan(ours))
    if isinstance(feast, float):  # the same double, sign of zero included
        return isinstance(ours, float) and struct.pack("<d", ours) == struct.pack("<d", feast)
    return ours == feast and type(ours) is type(feast) or (
        isinstance(feast, int) and not isinstance(feast, bool) and float(feast) == ours)


def test_decoder_agrees_with_feast_on_every_kind():
    blobs = _blobs()
    num, txt, other = decode(blobs)
    for i, blob in enumerate(blobs):
        expected = feast_value(blob)
        ours = feast_value(blob) if i in set(other.tolist()) else (
            txt[i] if txt[i] is not None else float(num[i]))
        assert _same_value(ours, expected), (i, blob, ours, expected)
    # integers a float cannot hold exactly, long strings and other kinds go to Feast's converter
    left = {feast_value(blobs[i]) if not isinstance(feast_value(blobs[i]), list) else "list"
            for i in other.tolist()}
    assert {2**53, 2**63 - 1, -(2**63), "z" * 200, True, "list"} <= left


def test_cells_keep_feast_values_a_column_of_numbers_cannot_hold():
    blobs = [Value(double_val=1.5).SerializeToString(), Value(int64_val=2**60).SerializeToString(),
             Value(string_val="air").SerializeToString(), Value(int64_val=7).SerializeToString()]
    cells = np.array([0, 2, 1, 3])  # 2 entities x 2 features (a number, a string)
    text = np.array([False, True, False, True])
    num_col, str_col = columns(*decode_cells(blobs, cells, text), 0, 2, ("num", "str"))
    assert num_col.dtype == object and num_col.tolist() == [1.5, 2**60]
    assert str_col.tolist() == ["air", 7]  # a number where text belongs: Feast's value, as is
    num_col, str_col = columns(*decode_cells(blobs[:1], np.array([2]), text), 0, 2,
                               ("num", "str"))
    assert num_col.dtype == float and np.isnan(num_col[0]) and num_col[1] == 1.5
    assert str_col.tolist() == [None, None]


def test_entity_keys_are_feasts():
    ids = ["SH000001", "S-é-ü-中", "", "x" * 300]
    for key in ("shipment_id", "lane_id", "hub_id"):
        ours = _keys(key, ids, b"shipdelay")
        feast = [serialize_entity_key(EntityKey(join_keys=[key],
                                                entity_values=[Value(string_val=i)]), 3)
                 + b"shipdelay" for i in ids]
        assert ours == feast


# ---------------------------------------------------------------- against Feast, both stores
def _link(root: Path, lake: Lake) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lake").symlink_to(lake.root.resolve())
    return root


@pytest.fixture(scope="module")
def sqlite_world(small_world, tmp_path_factory):
    lake, _ = small_world
    settings = Settings(data_dir=_link(tmp_path_factory.mktemp("fast-sqlite") / "data", lake))
    report = build_features(settings)
    return settings, report


def _redis_settings(root: Path, lake: Lake, sqlite: Settings) -> Settings:
    """A Redis online store over the SQLite world's offline tables (linked, read only)."""
    import os

    import redis

    db = 3 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    try:
        redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=2).flushdb()
    except redis.exceptions.ConnectionError:
        if services_required():
            pytest.fail("Redis at 127.0.0.1:6379 is required in CI and is not reachable")
        pytest.skip("no Redis at 127.0.0.1:6379")
    _link(root, lake)
    (root / "feast").mkdir()
    (root / "feast" / "offline").symlink_to(offline_dir(sqlite))
    return Settings(data_dir=root, online_store="redis", redis_url=f"redis://127.0.0.1:6379/{db}")


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def world(request, small_world, sqlite_world, tmp_path_factory):
    settings, report = sqlite_world
    if request.param == "redis":
        lake, _ = small_world
        settings = _redis_settings(tmp_path_factory.mktemp("fast-redis") / "data", lake,
                                   settings)
        store = get_store(settings)
        store.apply(definitions(offline_dir(settings)))
        store.materialize(start_date=report.online_from, end_date=report.online_to)
    store = get_store(settings)
    moving, now = in_flight(settings, 10**6)
    first = online_vectors(store, moving[:150] + moving[-150:], now)
    live = first.loc[first["known"] & ~first["delivered"], "shipment_id"].tolist()
    outcomes = Lake(settings.lake_dir).read("outcomes").sort_values("delivered_at")
    done = online_vectors(store, outcomes["shipment_id"].astype(str).tail(40).tolist(), now)
    delivered = done.loc[done["known"] & done["delivered"], "shipment_id"].tolist()
    unscanned = first.loc[first["known"] & first["milestones_done"].fillna(0).eq(0),
                          "shipment_id"].tolist()
    assert len(live) >= 50 and delivered and unscanned, "too few shipments of each kind"
    return settings, store, now, live, delivered, unscanned


def _assert_same(fast: pd.DataFrame, ref: pd.DataFrame) -> None:
    """Same columns in the same order, same rows, equal values (numbers bit for bit; missing
    where missing, NaN and None alike)."""
    assert list(fast.columns) == list(ref.columns) == vector_columns()
    assert len(fast) == len(ref)
    for c in ref.columns:
        a, b = ref[c], fast[c]
        na, nb = a.isna().to_numpy(), b.isna().to_numpy()
        assert (na == nb).all(), (c, a[na != nb].head(3).tolist(), b[na != nb].head(3).tolist())
        if pd.api.types.is_numeric_dtype(a):
            assert pd.api.types.is_numeric_dtype(b), c
            x, y = a.to_numpy(dtype=float)[~na], b.to_numpy(dtype=float)[~nb]
            assert np.array_equal(x.view(np.int64), y.view(np.int64)), (c, x[x != y], y[x != y])
        else:
            assert a[~na].tolist() == b[~nb].tolist(), c


def test_reader_returns_what_feast_returns(world):
    _, store, now, live, delivered, unscanned = world
    reader = OnlineReader(store)
    ids = [UNKNOWN, *live[:60], delivered[0], *unscanned[:3], *delivered[1:4], "SH-ALSO-UNKNOWN"]
    ids = list(dict.fromkeys(ids))
    fast, ref = reader.vectors(ids, now), online_vectors(store, ids, now)
    _assert_same(fast, ref)
    assert fast["known"].sum() == len(ids) - 2 and not fast.loc[0, "known"]
    assert fast.loc[fast["shipment_id"].isin(delivered), "delivered"].all()
    assert fast.loc[fast["shipment_id"].isin(live), "hours_to_promised"].notna().all()
    assert fast.loc[fast["shipment_id"] == UNKNOWN].drop(
        columns=["shipment_id", "known", "delivered"]).isna().all(axis=None)


@pytest.mark.parametrize("n", [1, 100])
def test_reader_equals_feast_one_id_and_a_hundred(world, n):
    _, store, now, live, _, _ = world
    ids = pd.Series(live).sample(min(n, len(live)), random_state=n).tolist()
    _assert_same(OnlineReader(store).vectors(ids, now), online_vectors(store, ids, now))


def test_repeated_ids_get_one_row_each_in_order(world):
    _, store, now, live, delivered, _ = world
    ids = [live[0], UNKNOWN, live[0], delivered[0], UNKNOWN]
    fast = OnlineReader(store).vectors(ids, now)
    assert fast["shipment_id"].tolist() == ids
    _assert_same(fast, online_vectors(store, ids, now))


def test_reader_sees_a_value_written_after_it_was_built(world):
    """No caching: a streamed update is read by the next call, as Feast reads it."""
    settings, store, now, live, _, _ = world
    reader = OnlineReader(store)
    progress = latest(off.read_view(offline_dir(settings), "shipment_progress"))
    shipment = [s for s in live if s in set(progress["shipment_id"])][-1]
    row = progress[progress["shipment_id"] == shipment].copy()
    before = reader.vectors([shipment], now)
    row["slip_h"] = float(before.loc[0, "slip_h"] if pd.notna(before.loc[0, "slip_h"])
                          else 0.0) + 17.25
    row[TIMESTAMP] = row[TIMESTAMP] + pd.Timedelta(minutes=1)
    store.write_to_online_store("shipment_progress", row)
    after = reader.vectors([shipment], now)
    assert after.loc[0, "slip_h"] == row["slip_h"].iloc[0] != before.loc[0, "slip_h"]
    _assert_same(after, online_vectors(store, [shipment], now))


def test_cached_reader_equals_feast_and_reads_progress_fresh(world):
    """With rows kept in memory, the answers stay Feast's (twice, unknown ids included), and a
    streamed progress update is still read by the next call."""
    settings, store, now, live, delivered, _ = world
    reader = OnlineReader(store, cache_seconds=3600)
    ids = [UNKNOWN, *live[:40], delivered[0]]
    for _ in range(2):
        _assert_same(reader.vectors(ids, now), online_vectors(store, ids, now))
    assert reader.tables.views == {r.view for r in reader.reads} - {"shipment_progress"}
    profiles = reader.tables.held("shipment_profile")
    assert UNKNOWN not in profiles and live[0] in profiles
    progress = latest(off.read_view(offline_dir(settings), "shipment_progress"))
    shipment = next(s for s in live[:40] if s in set(progress["shipment_id"]))
    row = progress[progress["shipment_id"] == shipment].copy()
    row["slip_h"] = 123.5
    row[TIMESTAMP] = row[TIMESTAMP] + pd.Timedelta(minutes=2)
    store.write_to_online_store("shipment_progress", row)
    assert reader.vectors([shipment], now).loc[0, "slip_h"] == 123.5


def test_reader_refuses_what_it_cannot_reproduce(world):
    settings, _, _, _, _, _ = world
    store = get_store(settings)
    store.config.entity_key_serialization_version = 2
    with pytest.raises(DirectReadUnsupported, match="serialization version 2"):
        OnlineReader(store)


@pytest.mark.parametrize("world", ["redis"], indirect=True)
def test_redis_wire_reads_retry_a_dropped_connection_and_drop_a_failed_one(world):
    """The reader's hand-written HMGETs go out on a pooled connection: one the server dropped
    is replaced once, and one left with unread replies by an error is never used again."""
    import redis

    from features.online_fast import _RedisHashes

    settings, store, now, live, _, _ = world
    hashes = OnlineReader(store).tables.tables
    assert isinstance(hashes, _RedisHashes)
    ping, echo = b"*1\r\n$4\r\nPING\r\n", b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n"
    assert hashes._send(ping, 1) == [b"PONG"]  # a pooled connection now exists
    admin = redis.Redis.from_url(settings.redis_url)
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    assert hashes._send(ping * 2, 2) == [b"PONG", b"PONG"]
    admin.set("shipdelay-test:not-a-hash", "x")
    wrong = b"*3\r\n$5\r\nHMGET\r\n$25\r\nshipdelay-test:not-a-hash\r\n$1\r\na\r\n"
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        hashes._send(wrong + echo % (5, b"stale"), 2)
    assert hashes._send(echo % (5, b"fresh"), 1) == [b"fresh"]
    fast = OnlineReader(store).vectors(live[:20], now)  # and reads still agree with Feast
    _assert_same(fast, online_vectors(store, live[:20], now))
