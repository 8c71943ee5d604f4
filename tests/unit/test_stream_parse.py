"""The stream's message parser against hostile input: every message, whatever its bytes, ends as
exactly one valid event or one dead letter with a reason, and the process survives."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import stream_parse
from serving.stream_metrics import StreamMetrics, reason_class
from serving.stream_parse import dead_letter_records, parse_batch
from serving.stream_screen import MAX_DEPTH, nesting_depth

NOW = pd.Timestamp("2025-05-02T00:00:00Z")
GOOD = {"event_id": "EV1", "shipment_id": "SH1", "parcel_id": "SH1-P01",
        "event_time": "2025-05-01T13:10:11.252451Z", "ingested_at": "2025-05-01T13:49:52Z",
        "event_type": "picked_up", "hub_id": "D-LCJ", "leg_index": 0, "latitude": 51.79,
        "longitude": 19.41, "note": None}
# every class a dead letter's reason may have: a metric label per class, never message content
CLASSES = {"null message value (a Kafka tombstone, not a tracking event)", "empty message",
           "message too large", "malformed JSON", "nested too deep", "duplicate field",
           "not a JSON object", "wrong type", "unreadable event",
           "event_id longer than 128 characters", "unknown event_type", "event_time is not an ISO-8601 time",
           "ingested_at is not an ISO-8601 time", "event_time in the future",
           "ingested_at in the future", "leg_index outside 0..31",
           "latitude is not a finite number", "longitude is not a finite number",
           "latitude outside -90..90", "longitude outside -180..180",
           "message key is not the shipment_id", "event_time before 1970",
           "ingested_at before 1970"} | {
    f"missing field {f}" for f in ("event_id", "shipment_id", "parcel_id", "event_time",
                                   "ingested_at", "event_type", "hub_id")} | {
    f"{f} holds a control character" for f in ("event_id", "shipment_id", "parcel_id",
                                               "event_time", "ingested_at", "event_type",
                                               "hub_id", "note")}


def event(**fields) -> bytes:
    return json.dumps(GOOD | fields).encode()


def meta(n: int) -> pd.DataFrame:
    return pd.DataFrame({"partition": 0, "offset": np.arange(n), "produced_ms": 0})


def parse(values: list, keys: list | None = None, max_bytes: int = 65_536):
    keys = keys if keys is not None else [b"SH1"] * len(values)
    return parse_batch(values, keys, meta(len(values)), now=NOW, max_bytes=max_bytes)


def test_inputs_that_crashed_the_process_are_dead_letters_in_a_live_process():
    """A lone `null` first in Arrow's input killed the interpreter (SIGSEGV); a deep document
    raised RecursionError in json.loads. Run where a crash cannot take pytest down."""
    code = """
import json, sys
import numpy as np, pandas as pd
from serving.stream_parse import parse_batch
hostile = [b"null", b" null ", b"null\\n", b"[" * 1000 + b"]" * 1000,
           b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[" * 20000 + b"]" * 20000]
for value in hostile:  # each alone: the first thing Arrow could be given
    p = parse_batch([value], [b"SH1"], pd.DataFrame({"partition": [0], "offset": [0],
                    "produced_ms": [0]}))
    print(json.dumps([len(p.events), p.dead["reason"].tolist()]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == 0, (done.returncode, done.stderr.decode()[-2000:])
    outcomes = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [n for n, _ in outcomes] == [0] * 6
    reasons = [r[0] for _, r in outcomes]
    assert reasons[:3] == ["not a JSON object: null"] * 3
    assert reasons[3].startswith("nested too deep") and reasons[4].startswith("nested too deep")
    assert reasons[5].startswith("nested too deep")


@pytest.mark.parametrize(("payload", "reason"), [
    (None, "null message value"),
    (b"", "empty message"),
    (b"null", "not a JSON object: null"),
    (b"[1, 2]", "not a JSON object: an array"),
    (b'"EV1"', "not a JSON object: a string"),
    (b"12", "not a JSON object: a number"),
    (b"x" * 70_000, "message too large: 70003 bytes, the limit is 65536"),
    (b"[" * 1_000 + b"]" * 1_000, "nested too deep"),
    (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nested too deep"),
    (event(note="caf\xe9").replace(b"caf\\u00e9", b"caf\xe9"), "malformed JSON: not UTF-8"),
    (event(latitude=float("nan")), "latitude is not a finite number"),
    (event(longitude=float("-inf")), "longitude is not a finite number"),
    (event().replace(b"51.79", b"1e400"), "latitude is not a finite number"),
    (event().replace(b'"leg_index": 0', b'"leg_index": 123456789012345678901234567890'),
     "leg_index outside 0..31"),
    (event().replace(b'"leg_index": 0', b'"leg_index": 1' + b"0" * 5000), "malformed JSON"),
    (event().replace(b'"leg_index": 0', b'"leg_index": true'), "wrong type: leg_index"),
    (event()[:-1] + b', "event_id": "EV2"}', "duplicate field: 'event_id'"),
    (event().replace(b'"EV1"', rb'"\ud800"'), "malformed JSON: event_id holds an unpaired"),
    (event().replace(b'"EV1"', b'"E\nV1"'), "malformed JSON: Invalid control character"),
    (event() + b" null", "malformed JSON: Extra data"),
    (event() + event(), "malformed JSON: Extra data"),
    (event(event_time="now"), "event_time is not an ISO-8601 time"),
    (event(event_time="today"), "event_time is not an ISO-8601 time"),
    (event(event_time="1960-01-01T00:00:00Z"), "event_time before 1970"),
    (event(event_id="EV\x00X"), "event_id holds a control character"),
    (event(note="\x1b[31mred"), "note holds a control character"),
])
def test_each_hostile_message_is_a_dead_letter_and_the_rest_go_on(payload, reason):
    good = [event(event_id=f"EV{i}") for i in range(30)]
    values = good[:10] + [payload] + good[10:]
    parsed = parse(values)
    assert parsed.events["event_id"].tolist() == [f"EV{i}" for i in range(30)]
    assert parsed.dead["offset"].tolist() == [10]
    assert parsed.dead["reason"].iloc[0].startswith(reason), parsed.dead["reason"].iloc[0]
    assert parsed.dead["raw"].iloc[0] == payload


def test_a_null_value_and_the_text_null_are_told_apart_in_their_dead_letters():
    parsed = parse([None, b"null"])
    records, keys = dead_letter_records(parsed.dead, "events", NOW)
    null, text = (json.loads(r) for r in records)
    assert null["reason"].startswith("null message value") and null["payload_b64"] is None
    assert null["payload"] is None and null["payload_bytes"] is None
    assert text["reason"] == "not a JSON object: null"
    assert base64.b64decode(text["payload_b64"]) == b"null" and text["payload_bytes"] == 4
    assert keys == [b"SH1", b"SH1"]


@pytest.mark.parametrize("value", [
    b"\xef\xbb\xbf" + event(event_id="BOM"),  # a byte-order mark, as a file may begin
    b"  \r\n" + event(event_id="BLANKS") + b"\n\t ",
    json.dumps(GOOD | {"event_id": "PRETTY"}, indent=2).encode(),
    event(event_id="X\nGENUINE-7"),  # an escaped newline is text like any other
    event(event_id="Überseehafen-日本-🚚"),
    event(note="naïve ünïcode ✓"),
    json.dumps(GOOD | {"event_id": "DUP-UNKNOWN"}, indent=1).encode()[:-1] + b',"x": 1,"x": 2}',
])
def test_odd_but_valid_messages_are_events(value):
    parsed = parse([value])
    assert parsed.dead.empty, parsed.dead["reason"].tolist()
    assert parsed.events["event_id"].iloc[0] == json.loads(value.decode("utf-8-sig"))["event_id"]


def test_the_size_limit_counts_key_and_value_and_the_dead_letter_keeps_a_bounded_payload():
    pad = 2_048 - len(event(note=""))
    fits = event(note="n" * (pad - 3))  # value 2,045 bytes + the 3-byte key = the limit
    over = event(note="n" * (pad - 2))
    huge = event(note="h" * 100_000)
    parsed = parse([fits, over, huge], max_bytes=2_048)
    assert parsed.events["offset"].tolist() == [0]
    assert parsed.dead["reason"].tolist() == [
        "message too large: 2049 bytes, the limit is 2048",
        f"message too large: {len(huge) + 3} bytes, the limit is 2048"]
    records, _ = dead_letter_records(parsed.dead, "events", NOW, max_bytes=2_048)
    small, big = (json.loads(r) for r in records)
    assert base64.b64decode(small["payload_b64"]) == over and "truncated" not in small
    assert base64.b64decode(big["payload_b64"]) == huge[:2_048] and big["truncated"] is True
    assert big["payload_bytes"] == len(huge)
    assert big["payload_sha256"] == hashlib.sha256(huge).hexdigest()
    assert len(records[1]) < 4 * 2_048  # far below what brokers accept, whatever came in


def test_mixed_naive_and_offset_times_in_one_batch_keep_their_instants():
    """A naive time after an offset one used to take that offset (10:00 naive -> 05:00Z)."""
    rows = [("A", "2025-02-28T10:00:00+05:00", "2025-02-28T05:00:00Z"),
            ("B", "2025-02-28T10:00:00", "2025-02-28T10:00:00Z"),
            ("C", "2025-02-28 10:00", "2025-02-28T10:00:00Z"),
            ("D", "2025-02-28T15:00:00+02", "2025-02-28T13:00:00Z"),  # hour-only offset
            ("E", "2025-02-28T10:00:00", "2025-02-28T10:00:00Z"),
            ("F", "2025-02-28T01:30:00-0330", "2025-02-28T05:00:00Z"),
            ("G", "20250228T100000", "2025-02-28T10:00:00Z"),
            ("H", "2025-02-28T10:00:00.1234567Z", "2025-02-28T10:00:00.123456Z")]
    values = [event(event_id=i, event_time=t, ingested_at="2025-03-01T00:00:00Z")
              for i, t, _ in rows]
    parsed = parse(values)
    assert parsed.dead.empty, parsed.dead["reason"].tolist()
    got = dict(zip(parsed.events["event_id"], parsed.events["event_time"]))
    assert {i: got[i] for i, _, _ in rows} == {i: pd.Timestamp(want) for i, _, want in rows}


def test_every_dead_letter_is_counted_by_its_class():
    values = [None, b"", b"null", b"[1]", event(latitude=float("nan")), event(hub_id=7),
              event(event_id="A\nB", event_type="beamed"), event(event_id="ok")]
    parsed = parse(values)
    metrics = StreamMetrics()
    metrics.batch({"events": len(parsed.events), "applied": len(parsed.events)},
                  parsed.dead["reason"].tolist(), 0.1, np.zeros(1), {})
    counted = {s.labels["reason"]: s.value for m in metrics.registry.collect()
               if m.name == "shipdelay_stream_dead_letters" for s in m.samples
               if s.name.endswith("_total")}
    assert counted == {"null message value (a Kafka tombstone, not a tracking event)": 1,
                       "empty message": 1, "not a JSON object": 2,
                       "latitude is not a finite number": 1, "wrong type": 1,
                       "unknown event_type": 1}
    assert metrics.totals["dead"] == 7


# ------------------------------------------------------------------------------ the fuzz

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8)
# text as ingest accepts it: no control characters but tab and line breaks, no surrogates
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters=[
    chr(c) for c in [*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]]), max_size=40)
instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2025, 4, 29))
offsets = st.sampled_from([None, "Z", "+05:00", "-03:30", "+0100", "+00:00", "+02"])


@st.composite
def time_text(draw) -> tuple[str, pd.Timestamp]:
    """An ISO-8601 rendering of a random instant (naive = UTC), and the instant."""
    moment = draw(instants).replace(microsecond=draw(st.integers(0, 999_999)))
    off = draw(offsets)
    if off is None:
        return moment.isoformat(sep=draw(st.sampled_from(["T", " "]))), pd.Timestamp(
            moment, tz="UTC")
    if off == "Z":
        return moment.isoformat() + "Z", pd.Timestamp(moment, tz="UTC")
    sign = 1 if off[0] == "+" else -1
    hours, minutes = int(off[1:3]), int(off[-2:]) if len(off) > 3 else 0
    tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return moment.isoformat() + off, pd.Timestamp(moment.replace(tzinfo=tz)).tz_convert(UTC)


@st.composite
def valid_message(draw, n: int) -> tuple[bytes, dict]:
    """A valid event with an odd id, odd time texts or an odd envelope; and what it holds."""
    text, instant = draw(time_text())
    fields = {"event_id": f"V{n}-" + draw(texts),
              "event_time": text, "ingested_at": "2025-05-01T00:00:00Z",
              "note": draw(st.none() | texts),
              "latitude": draw(st.none() | st.floats(-90, 90)),
              "leg_index": draw(st.none() | st.integers(0, 31))}
    value = event(**fields) if draw(st.booleans()) else json.dumps(
        GOOD | fields, ensure_ascii=False, indent=draw(st.sampled_from([None, 1]))).encode()
    if draw(st.booleans()):
        value = draw(st.sampled_from([b"\xef\xbb\xbf", b" ", b"\n", b""])) + value
    return value, {"event_id": fields["event_id"], "event_time": instant}


# values that make each field invalid
BROKEN = {f: [None, 7, True, [], {}, ""] for f in ("event_id", "shipment_id", "parcel_id",
                                                   "event_type", "hub_id")}
BROKEN["hub_id"] = [*BROKEN["hub_id"], "D-\x00", "D\x1b[31m"]
BROKEN |= {"event_time": [None, 7, "soon", "now", "", "2025-02-30T00:00:00Z", "01/02/2024",
                          "1969-12-31T23:59:59Z", "2025-02"],
           "leg_index": [-1, 32, 2**70, True, "1", 1.5, float("nan"), []],
           "latitude": [float("nan"), float("inf"), 91.0, -90.5, "1", True, {}],
           }
BROKEN["event_id"] = [*BROKEN["event_id"], "x" * 129]
hostile_message = st.one_of(
    st.binary(max_size=200),
    st.none(), st.sampled_from([b"", b"null", b" null", b"{}", b"[]", b"{} null", b"\xef\xbb"]),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(33, 5_000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(33, 3_000).map(lambda d: b'{"event_id":' * d + b'"x"' + b"}" * d),
    st.integers(2_100, 20_000).map(lambda n: event(note="x" * n)),  # over the 2 KiB limit
    st.sampled_from(sorted(BROKEN)).flatmap(
        lambda f: st.sampled_from(BROKEN[f]).map(lambda v: event(**{f: v}))),
    st.binary(min_size=1, max_size=4).map(lambda b: event(event_id="bad-utf8").replace(
        b"bad-utf8", b"\xff" + b)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(st.data())
def test_fuzz_every_message_ends_as_one_event_or_one_dead_letter(data):
    n = data.draw(st.integers(1, 25), label="messages")
    values, keys, valid = [], [], {}
    for i in range(n):
        if data.draw(st.booleans()):
            value, holds = data.draw(valid_message(i))
            valid[i] = holds
            key = b"SH1"
        else:
            value = data.draw(hostile_message)
            key = data.draw(st.sampled_from([b"SH1", None, b"\xff\x00", b"other"]))
        values.append(value)
        keys.append(key)
    arrow_inputs = []
    read_json = stream_parse.pj.read_json

    def recorded(source, **kw):
        arrow_inputs.append(source.getvalue())
        return read_json(source, **kw)

    with mock.patch.object(stream_parse.pj, "read_json", recorded):
        parsed = parse(values, keys, max_bytes=2_048)

    # Arrow only ever sees lines shaped as objects: valid UTF-8, bounded in size and depth
    for line in (x for text in arrow_inputs for x in text.split(b"\n")):
        assert line[:1] == b"{" and line[-1:] == b"}", line[:80]
        assert len(line) <= 2_048 and nesting_depth(line) <= MAX_DEPTH
        line.decode("utf-8")
    events, dead = parsed.events["offset"].tolist(), parsed.dead["offset"].tolist()
    assert sorted(events + dead) == list(range(n))  # each exactly once
    for i, holds in valid.items():
        row = parsed.events[parsed.events["offset"] == i]
        assert len(row) == 1, (values[i], parsed.dead["reason"].tolist())
        assert row["event_id"].iloc[0] == holds["event_id"]
        assert row["event_time"].iloc[0] == holds["event_time"], (values[i], row)
    assert set(dead) == set(range(n)) - set(valid)  # every other message a dead letter
    for row in parsed.dead.itertuples():
        assert row.raw == values[row.offset] and row.key == keys[row.offset]
        assert row.reason and reason_class(row.reason) in CLASSES, row.reason
    records, _ = dead_letter_records(parsed.dead, "events", NOW, max_bytes=2_048)
    assert [json.loads(r)["offset"] for r in records] == dead
