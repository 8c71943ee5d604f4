"""The stream's per-shipment state in the online store: the applied event ids come back exactly
as they went in, whatever characters they hold, and a store written in the former layout
(ids joined by newlines) is still read."""

from __future__ import annotations

import pandas as pd
import pytest

from features.online_direct import SqliteOnline, entity_keys
from features.schema import VIEWS
from serving.stream_store import StreamStore, decode_ids, encode_ids
from shipdelay.lake import Lake

IDS = [["X\nGENUINE-7"], ["GENUINE-7", "a\"b\\c", "Überseehafen-🚚", "", "\u2028\t\r"],
       [], ["[\"not\", \"a list\"]"]]


@pytest.fixture
def store(tmp_path):
    online = SqliteOnline(str(tmp_path / "online.db"))
    online.conn.execute(  # Feast's layout of a view's table
        'CREATE TABLE "shipdelay_shipment_progress" (entity_key BLOB, feature_name TEXT, '
        "value BLOB, value_text TEXT, event_ts timestamp, created_ts timestamp, "
        "PRIMARY KEY (entity_key, feature_name))")
    yield StreamStore(online)
    online.close()


def _commit(store, ids: list[str], applied: list[list[str]]) -> None:
    kinds = {"int": 1, "float": 1.5, "str": "x"}
    progress = pd.DataFrame({"shipment_id": ids, "event_timestamp": pd.Timestamp(
        "2025-01-01", tz="UTC"), **{c: kinds[k] for c, k in VIEWS["shipment_progress"].items()}})
    state = pd.DataFrame({"shipment_id": ids, "applied": pd.Series(applied, dtype=object),
                          "p_late": [0.5] * len(ids)})
    store.commit(progress, state, token="t1")


def test_applied_ids_round_trip_whatever_they_hold(store):
    ids = [f"SH{i}" for i in range(len(IDS))]
    _commit(store, ids, IDS)
    got = store.read_state(ids + ["SH-NEVER"])
    assert got["applied"].tolist() == [*IDS, []]
    assert got["p_late"].tolist()[:-1] == [0.5] * len(IDS)


def test_a_newline_in_one_id_never_makes_another_id_look_applied(store):
    _commit(store, ["SH1"], [["X\nGENUINE-7"]])
    applied = store.read_state(["SH1"])["applied"].iloc[0]
    assert "GENUINE-7" not in applied and applied == ["X\nGENUINE-7"]


def test_state_in_the_former_layout_is_read_and_replaced_at_the_next_commit(store):
    key = entity_keys("shipment_id", ["SH1"])[0]
    store.online.conn.execute("INSERT INTO shipdelay_stream_state (entity_key, applied, p_late) "
                              "VALUES (?, ?, ?)", (key, "EV1\nEV2", 0.25))
    got = store.read_state(["SH1"])
    assert got["applied"].iloc[0] == ["EV1", "EV2"] and got["p_late"].iloc[0] == 0.25
    _commit(store, ["SH1"], [["EV1", "EV2", "EV3"]])
    row = store.online.conn.execute("SELECT applied, applied_ids FROM shipdelay_stream_state"
                                    ).fetchone()
    assert row[0] is None and store.read_state(["SH1"])["applied"].iloc[0] == [
        "EV1", "EV2", "EV3"]


def test_a_store_table_from_before_gains_the_new_column(tmp_path):
    online = SqliteOnline(str(tmp_path / "old.db"))
    online.conn.execute("CREATE TABLE shipdelay_stream_state (entity_key BLOB PRIMARY KEY, "
                        "applied TEXT, p_late REAL)")
    StreamStore(online)
    columns = [r[1] for r in online.conn.execute("PRAGMA table_info(shipdelay_stream_state)")]
    assert columns == ["entity_key", "applied", "p_late", "applied_ids"]


def test_decoding_reads_all_lists_at_once_and_old_text_where_no_list():
    texts = encode_ids(IDS)
    assert decode_ids([*texts, None], [None] * len(IDS) + ["A\nB"]) == [*IDS, ["A", "B"]]


def test_hubs_are_the_lakes_and_a_new_hub_is_seen_after_the_refresh(tmp_path, data_dir,
                                                                     monkeypatch):
    lake = Lake(tmp_path / "lake")
    hub = {"hub_id": "D-AAA", "name": "A", "kind": "depot", "city": "A", "country": "DE",
           "region": "europe", "latitude": 50.0, "longitude": 8.0}
    lake.append("hubs", pd.DataFrame([hub]))
    store = StreamStore(SqliteOnline(str(tmp_path / "o.db")), lake_dir=tmp_path / "lake")
    assert store.known_hubs(pd.Series(["D-AAA", "D-BBB", "d-aaa"])).tolist() == [
        True, False, False]
    lake.append("hubs", pd.DataFrame([hub | {"hub_id": "D-BBB"}]))
    assert not store.known_hubs(pd.Series(["D-BBB"]))[0]  # read again at most every minute
    monkeypatch.setattr("serving.stream_store.HUB_TTL_S", 0.0)
    assert store.known_hubs(pd.Series(["D-BBB"]))[0]
    assert StreamStore(store.online).known_hubs(pd.Series(["ANY"]))[0]  # no lake: unchecked
