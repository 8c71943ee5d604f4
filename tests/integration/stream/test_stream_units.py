"""The stream's pure parts without Kafka: message parsing and validation, Feast's value and key
encodings, alert rules."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import StringList, Value

from features.online_direct import decode, encode, entity_keys
from serving.replay import due_offsets, to_messages
from serving.stream_parse import parse_batch

GOOD = {"event_id": "EV1", "shipment_id": "SH1", "parcel_id": "SH1-P01",
        "event_time": "2025-05-01T13:10:11.252451Z", "ingested_at": "2025-05-01T13:49:52Z",
        "event_type": "picked_up", "hub_id": "D-LCJ", "leg_index": 0, "latitude": 51.79,
        "longitude": 19.41, "note": None}


def _meta(n: int) -> pd.DataFrame:
    return pd.DataFrame({"partition": 0, "offset": np.arange(n), "produced_ms": 0})


@pytest.mark.parametrize(("payload", "reason"), [
    (b'{"event_id": "EV1", ', "malformed JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b'"just a string"', "not a JSON object"),
    (json.dumps(GOOD | {"leg_index": "zero"}).encode(), "wrong type: leg_index must be an integer"),
    (json.dumps(GOOD | {"hub_id": 7}).encode(), "wrong type: hub_id must be a string"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "shipment_id"}).encode(),
     "missing field shipment_id"),
    (json.dumps(GOOD | {"event_type": "beamed"}).encode(), "unknown event_type"),
    (json.dumps(GOOD | {"event_time": "soon"}).encode(), "event_time is not an ISO-8601 time"),
    (json.dumps(GOOD | {"event_time": "2025-05-03T00:00:00Z"}).encode(),
     "event_time in the future"),
    (json.dumps(GOOD | {"ingested_at": "2199-01-01T00:00:00Z",
                        "event_time": "2199-01-01T00:00:00Z"}).encode(),
     "ingested_at in the future"),
    (json.dumps(GOOD | {"leg_index": 40}).encode(), "leg_index outside 0..31"),
    (json.dumps(GOOD | {"latitude": 123.0}).encode(), "latitude outside -90..90"),
    (b"", "empty message"),
])
def test_each_bad_message_is_named_and_the_rest_go_on(payload, reason):
    good = [json.dumps(GOOD | {"event_id": f"EV{i}"}).encode() for i in range(50)]
    values = good[:20] + [payload] + good[20:]
    parsed = parse_batch(values, [b"SH1"] * len(values), _meta(len(values)))
    assert parsed.events["event_id"].tolist() == [f"EV{i}" for i in range(50)]
    assert parsed.dead["offset"].tolist() == [20]
    assert parsed.dead["reason"].iloc[0].startswith(reason), parsed.dead["reason"].iloc[0]
    assert parsed.dead["raw"].iloc[0] == payload


def test_parsed_events_keep_types_and_kafka_positions():
    pretty = json.dumps(GOOD | {"event_id": "EV-pretty"}, indent=2).encode()  # newlines inside
    values = [json.dumps(GOOD).encode(), pretty, json.dumps(GOOD | {"leg_index": None}).encode()]
    parsed = parse_batch(values, [b"SH1", b"SH1", b"OTHER"], _meta(3))
    assert parsed.events["event_id"].tolist() == ["EV1", "EV-pretty"]
    assert str(parsed.events["event_time"].dtype) == "datetime64[ns, UTC]"
    assert parsed.events["offset"].tolist() == [0, 1]
    assert parsed.dead["reason"].tolist() == ["message key is not the shipment_id"]


def test_replay_messages_parse_back_to_the_same_events():
    frame = pd.DataFrame([GOOD | {"event_id": f"EV{i}", "note": "wx delay" if i else None}
                          for i in range(5)])
    for c in ("event_time", "ingested_at"):
        frame[c] = pd.to_datetime(frame[c], utc=True)
    values, keys = to_messages(frame)
    parsed = parse_batch(values, keys, _meta(5))
    assert parsed.dead.empty
    pd.testing.assert_series_equal(parsed.events["event_time"], frame["event_time"],
                                   check_names=False)
    assert parsed.events["note"].tolist()[1:] == ["wx delay"] * 4
    assert pd.isna(parsed.events["note"].iloc[0])
    assert due_offsets(frame, speedup=None, rate=10).tolist() == [0, 0.1, 0.2, 0.3, 0.4]


def test_values_and_keys_are_encoded_exactly_as_feast_does():
    ids = ["SH00000001", "x", "Überseehafen"]
    want = [serialize_entity_key(EntityKey(join_keys=["shipment_id"],
                                           entity_values=[Value(string_val=i)]), 3) for i in ids]
    assert entity_keys("shipment_id", ids) == want
    floats = pd.Series([1.5, np.nan, -0.0, 1e300, 3.0])
    assert encode(floats, "float") == [b"" if np.isnan(v) else Value(double_val=v)
                                       .SerializeToString() for v in floats]
    ints = pd.Series([0, -1, 2**40, None], dtype="Int64")
    assert encode(ints, "int") == [Value(int64_val=0).SerializeToString(),
                                   Value(int64_val=-1).SerializeToString(),
                                   Value(int64_val=2**40).SerializeToString(), b""]
    texts = pd.Series(["a", None, "ü"], dtype="string")
    assert encode(texts, "str") == [Value(string_val="a").SerializeToString(), b"",
                                    Value(string_val="ü").SerializeToString()]
    assert np.allclose(decode(encode(floats, "float"), "float"), floats, equal_nan=True)
    assert decode(encode(ints, "int"), "int").tolist()[:3] == [0, -1, 2**40]
    assert decode(encode(texts, "str"), "str").tolist()[::2] == ["a", "ü"]
    lists = [Value(string_list_val=StringList(val=["A", "B"])).SerializeToString(), None]
    assert decode(lists, "str_list").tolist() == [["A", "B"], None]
