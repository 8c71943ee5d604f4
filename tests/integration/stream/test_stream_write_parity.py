"""What the stream commits to the SQLite online store (one UPDATE per shipment already online,
Feast's row-by-row upsert for the others) is what Feast itself reads back: every progress feature
of `get_online_features`, and its event timestamp, equals the rows committed, for shipments
already online, shipments new to the store, and a shipment one of whose feature rows was lost.
The table's rows equal those of Feast's own row-by-row upsert, row for row."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.online_direct import SqliteOnline, _per_feature_rows, _upsert_sql, entity_keys
from features.schema import SHIPMENT_PROGRESS, TIMESTAMP, VIEWS
from features.store import PROJECT, get_store
from features.transforms import latest
from serving.stream_setup import progress_before
from serving.stream_store import StreamStore
from tests.integration.stream.conftest import direct, make_case

VIEW = "shipment_progress"
TABLE = f"{PROJECT}_{VIEW}"


def _later_progress(case, online: SqliteOnline) -> pd.DataFrame:
    """Progress rows the lake's events give a few days after the cut: new values for 100
    shipments the rewound store holds and 20 it does not, nulls where nothing happened yet."""
    rows = latest(progress_before(case.settings, case.cut + pd.Timedelta(days=4)))
    rows = rows.sort_values(TIMESTAMP).reset_index(drop=True)
    held = online.read(VIEW, rows["shipment_id"].astype(str).tolist())["found"].to_numpy()
    return pd.concat([rows[~held].tail(20), rows[held].tail(100)], ignore_index=True)


def _same(ours, feast) -> bool:
    if ours is None or (isinstance(ours, float) and math.isnan(ours)) or ours is pd.NA:
        return feast is None or (isinstance(feast, float) and math.isnan(feast))
    if isinstance(ours, (float, np.floating)):
        return isinstance(feast, float) and float(ours) == feast
    if isinstance(ours, (int, np.integer)):
        return feast == int(ours)
    return feast == str(ours)


def test_committed_progress_is_what_feast_reads(stream_world, tmp_path):
    case = make_case(stream_world, tmp_path / "data", "sqlite", "127.0.0.1:9")
    online = direct(case)
    assert isinstance(online, SqliteOnline)
    frame = _later_progress(case, online)
    ids = frame["shipment_id"].astype(str).tolist()
    keys = entity_keys("shipment_id", ids)
    # one shipment online lost one feature row: it takes the upsert, as the new ones do
    online.conn.execute(f'DELETE FROM "{TABLE}" WHERE entity_key = ? AND feature_name = ?',
                        (keys[-1], "slip_h"))
    assert online.read(VIEW, ids)["found"].sum() == 100  # 99 rewritten in place, 21 upserted
    state = pd.DataFrame({"shipment_id": ids, "applied": pd.Series([["EV"]] * len(ids)),
                          "p_late": 0.5})
    store = StreamStore(online)
    store.commit(frame, state, token="parity")
    # Feast's own reader, on the same file
    feature_refs = [f"{VIEW}:{c}" for c in SHIPMENT_PROGRESS]
    got = get_store(case.settings).get_online_features(
        features=feature_refs, entity_rows=[{"shipment_id": i} for i in ids]
    ).to_dict(include_event_timestamps=True)
    for c in SHIPMENT_PROGRESS:
        bad = [(i, v, g) for i, v, g in zip(ids, frame[c].tolist(), got[c]) if not _same(v, g)]
        assert not bad, (c, bad[:3])
    want = (pd.DatetimeIndex(pd.to_datetime(frame[TIMESTAMP], utc=True)).as_unit("ns").asi8
            // 10**9).tolist()  # whole seconds, as Feast keeps them
    for c in SHIPMENT_PROGRESS:
        assert got[f"{c}__ts"] == want, c
    # row for row, what Feast's per-feature upsert leaves (value, text, stamp, created_ts)
    twin = SqliteOnline(":memory:")
    twin.conn.execute(f'CREATE TABLE "{TABLE}" (entity_key BLOB, feature_name TEXT, value BLOB, '
                      "value_text TEXT, vector_value BLOB, event_ts timestamp, created_ts "
                      "timestamp, PRIMARY KEY(entity_key, feature_name))")
    k, cells, ts = twin._cells(VIEW, frame)
    twin.conn.executemany(_upsert_sql(VIEW), _per_feature_rows(k, list(VIEWS[VIEW]), cells, ts))
    query = (f'SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM '
             f'"{{}}" WHERE entity_key IN ({",".join("?" * len(keys))}) '
             "ORDER BY entity_key, feature_name")
    assert online.conn.execute(query.format(TABLE), keys).fetchall() == \
        twin.conn.execute(query.format(TABLE), keys).fetchall()
    online.close()
