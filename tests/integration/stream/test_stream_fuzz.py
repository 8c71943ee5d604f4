"""Hostile messages published between valid events, through `shipdelay stream` on the embedded
Kafka cluster: random bytes, nulls, deep nesting, huge messages, wrong types, non-finite
numbers, newline and unicode ids, mixed time zones. Every valid event is applied once (the
online and offline state equal the backfill of the same events), every other message is one
dead letter with its reason and payload, counted by class in the metrics, and the one consumer
process runs to its end without a crash or a restart."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import urllib.request
from collections import Counter

import numpy as np
import pandas as pd

from features import offline as off
from features.build import EVENT_COLUMNS, progress_chunks
from features.store import offline_dir
from serving.kafka import Topics
from serving.replay import lake_events, publish, to_messages
from serving.stream_metrics import reason_class
from serving.stream_store import StreamStore
from shipdelay.lake import Lake
from tests.integration.stream.checks import assert_progress_equals
from tests.integration.stream.conftest import direct, make_case, read_topic, start_stream, stop
from tests.net import free_port

STREAMED = 1_000  # the first lake events after the cut: several batches, quick to run
TIMES = ("event_time", "ingested_at")


def _known(case, ids) -> set[str]:
    found = direct(case).read("shipment_profile", sorted(set(ids)), ["n_legs"])
    return set(found.loc[found["found"], "shipment_id"].astype(str))


def _valid_extras(base: pd.Series, other: pd.Series) -> list[tuple[pd.Series, bytes, dict]]:
    """Valid re-scans of two real events, each with an odd id, envelope or time rendering:
    (the source event, the message, the event as the lake would hold it). Each is ingested a
    few microseconds after its source, so that it is a moment of its own in both paths."""
    out = []

    def add(source: pd.Series, event_id: str, render) -> None:
        row = source.copy()
        row["event_id"] = event_id
        row["ingested_at"] = source["ingested_at"] + pd.Timedelta(microseconds=len(out) + 1)
        doc = json.loads(to_messages(pd.DataFrame([row]))[0][0])
        out.append((source, render(row, doc), row.to_dict()))

    def plain(_row, doc) -> bytes:
        return json.dumps(doc).encode()

    def offset(row, doc) -> bytes:  # the same instants, five hours ahead with +05:00
        return json.dumps(doc | {c: (row[c] + pd.Timedelta(hours=5)).tz_localize(None)
                                 .isoformat() + "+05:00" for c in TIMES}).encode()

    def naive(row, doc) -> bytes:  # the same instants, naive (UTC)
        return json.dumps(doc | {c: row[c].tz_localize(None).isoformat()
                                 for c in TIMES}).encode()

    # in one micro-batch, a naive time after an offset one used to take that offset
    for n, source in enumerate((base, other)):
        add(source, f"FZ-TZ-OFFSET-{n}", offset)
        add(source, f"FZ-TZ-NAIVE-{n}", naive)
    add(base, "FZ-X\nFZ-GENUINE-7", plain)
    add(base, "FZ-ünï-日本-🚚", lambda _r, d: json.dumps(d, ensure_ascii=False).encode())
    add(base, "FZ-PRETTY", lambda _r, d: json.dumps(d, indent=2).encode())
    add(base, "FZ-BOM", lambda _r, d: b"\xef\xbb\xbf" + json.dumps(d).encode())
    add(base, "FZ-GENUINE-7", plain)  # after the id that holds it
    return out


def _hostile(good: dict, rng: np.random.Generator) -> list[tuple[bytes | None, str]]:
    """(payload, the reason's expected start); '' = any reason."""
    def ev(**kw) -> bytes:
        return json.dumps(good | kw).encode()

    out = [
        (None, "null message value"), (b"", "empty message"), (b"null", "not a JSON object"),
        (b"[" * 1_000 + b"]" * 1_000, "nested too deep"),
        (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "nested too deep"),
        (b'{"event_id": "FZ-H1", "note": "' + b"x" * 200_000 + b'"}', "message too large"),
        (b'["FZ-H2"]', "not a JSON object"), (b'"FZ-H3"', "not a JSON object"),
        (b"12345", "not a JSON object"), (b"\xef\xbb\xbf[1]", "not a JSON object"),
        (ev(event_id="FZ-H4", leg_index="two"), "wrong type: leg_index"),
        (ev(event_id="FZ-H5", hub_id=7), "wrong type: hub_id"),
        (ev(event_id="FZ-H6", latitude=float("nan")), "latitude is not a finite number"),
        (ev(event_id="FZ-H7", longitude=float("inf")), "longitude is not a finite number"),
        (ev(event_id="FZ-H8", leg_index=10**30), "leg_index outside 0..31"),
        (ev(event_id="FZ-H9", note="é").replace(b"\\u00e9", b"\xe9"), "malformed JSON: not UTF-8"),
        (ev(event_id="FZ-H10")[:-1] + b', "event_id": "FZ-H10b"}', "duplicate field"),
        (ev(event_id="FZ-H11", hub_id="X-NOWHERE"), "unknown hub"),
        (ev(event_id="FZ-H12\x00"), "event_id holds a control character"),
        (ev(event_id="FZ-H13", event_time="now"), "event_time is not an ISO-8601 time"),
        (ev(event_id="FZ-H14", event_time="1960-01-01T00:00:00Z"), "event_time before 1970"),
        (ev(event_id="FZ-H15").replace(b"FZ-H15", rb"\ud800"), "malformed JSON"),
        (ev(event_id="FZ-H16", event_type="teleported"), "unknown event_type"),
        (ev(event_id="FZ-H17", shipment_id="SH-NO-SUCH"), "message key is not the shipment_id"),
    ]
    out += [(bytes(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8)), "")
            for _ in range(6)]
    return out


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            return r.read().decode()
    except OSError:
        return None


def test_fuzz_hostile_messages_between_valid_events(stream_world, kafka, tmp_path):
    case = make_case(stream_world, tmp_path / "data", "sqlite", kafka)
    rng = np.random.default_rng(17)
    lake = lake_events(case.settings, since=case.cut).head(STREAMED)
    known = _known(case, lake["shipment_id"].astype(str))
    moving = lake[lake["shipment_id"].astype(str).isin(known)
                  & (lake["event_type"] != "delivered")]
    base = moving.iloc[len(moving) // 3]
    others = moving[moving["shipment_id"] != base["shipment_id"]]
    other = others.iloc[2 * len(others) // 3]
    extras = _valid_extras(base, other)
    values, keys = to_messages(lake)
    good = json.loads(values[0])
    hostile = _hostile(good, rng)

    # each extra right behind its source event (the lake's index is its position), in order;
    # hostile messages anywhere, keyed by a real shipment so that they share its partition
    out_v, out_k = list(values), list(keys)
    for _, (source, value, _) in sorted(enumerate(extras), key=lambda e: (e[1][0].name, e[0]),
                                        reverse=True):  # from the back: positions stay true
        out_v.insert(int(source.name) + 1, value)
        out_k.insert(int(source.name) + 1, str(source["shipment_id"]).encode())
    for payload, _ in hostile:
        at = int(rng.integers(0, len(out_v)))
        out_v.insert(at, payload)
        out_k.insert(at, str(good["shipment_id"]).encode())
    extra_events = pd.DataFrame([event for _, _, event in extras]).astype(lake.dtypes.to_dict())

    from confluent_kafka import Producer

    from serving.kafka import producer_config

    publish(Producer(producer_config(case.settings)), Topics.from_settings(case.settings).events,
            out_v, out_k, np.zeros(len(out_v)))
    # the scores are not what is tested here: no tree compilation competing for the cores
    case.env["SHIPDELAY_COMPILED_TREES"] = "0"
    port, log = free_port(), tmp_path / "stream.log"
    proc = start_stream(case, "--idle-exit", "4", "--metrics-port", str(port), log=log)
    scraped = None
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the stream did not finish:\n" + \
                log.read_text()[-3000:]
            scraped = _scrape(port) or scraped  # the last scrape: while idle before the exit
            time.sleep(0.3)
    finally:
        stop(proc)
    text = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]
    totals = json.loads(re.findall(r"stream totals: (\{.*\})", text)[-1])
    assert totals["events"] == len(out_v)  # one process consumed everything, once

    # every valid event applied once: the state is the backfill's of the same events
    before = Lake(case.settings.lake_dir).read("tracking_events", columns=EVENT_COLUMNS)
    before = before[before["ingested_at"] < case.cut]
    streamed = pd.concat([lake[EVENT_COLUMNS], extra_events[EVENT_COLUMNS]], ignore_index=True)
    unknown = ~streamed["shipment_id"].astype(str).isin(known)
    profile = off.read_view(offline_dir(case.settings), "shipment_profile")
    profile = profile.sort_values("event_timestamp").drop_duplicates("shipment_id", keep="last")
    expected = pd.concat(list(progress_chunks(
        pd.concat([before, streamed[~unknown]], ignore_index=True), profile)), ignore_index=True)
    touched = sorted(set(streamed.loc[~unknown, "shipment_id"].astype(str)))
    assert_progress_equals(case, expected, touched)
    state = StreamStore(direct(case)).read_state(extra_events["shipment_id"].astype(str)
                                                 .unique().tolist())
    applied = state.explode("applied")["applied"].tolist()
    assert sorted(applied.count(e) for e in extra_events["event_id"]) == [1] * len(extras)

    # every other message one dead letter, with its payload and its reason
    topics = Topics.from_settings(case.settings)
    records = [json.loads(m.value())
               for m in read_topic(case.settings, topics.dead_letters, idle_s=2.0)]
    letters = {(r["partition"], r["offset"]): r for r in records}  # a reprocess may resend
    assert len(letters) == len(records), "the consumer reprocessed a batch"
    by_payload: dict = {}
    for r in letters.values():
        payload = None if r["payload_b64"] is None else base64.b64decode(r["payload_b64"])
        by_payload.setdefault(payload, []).append(r)
    for payload, reason in hostile:
        got = by_payload.get(payload if payload is None or len(payload) <= 65_536
                             else payload[:65_536], [])
        assert len(got) == 1, (payload[:80] if payload else payload, got)
        assert got[0]["reason"] and got[0]["reason"].startswith(reason), (got[0], reason)
        if payload is not None and len(payload) > 65_536:
            assert got[0]["truncated"] and got[0]["payload_bytes"] == len(payload)
            assert got[0]["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert len(letters) == len(hostile) + int(unknown.sum())
    assert sum(r["reason"] == "unknown shipment" for r in letters.values()) == unknown.sum()

    # ... and counted in the metrics by class
    assert scraped is not None, "the metrics endpoint never answered"
    counted = {m[0]: float(m[1]) for m in re.findall(
        r'^shipdelay_stream_dead_letters_total\{reason="([^"]*)"\} (\S+)$', scraped, re.MULTILINE)}
    want = Counter(reason_class(r["reason"]) for r in letters.values())
    assert counted == {k: float(v) for k, v in want.items()}
    assert totals["dead"] == len(letters) and totals["applied"] == len(streamed[~unknown])

    # where the batches' time went: every batch parsed, scored and committed its offsets, and
    # the stages add up to no more than the time the stream was busy
    stages = totals["stage_s"]
    assert {"parse", "score", "publish", "online_commit", "offset_commit"} <= set(stages)
    assert 0 < sum(stages.values()) <= totals["busy_s"] + 0.01
    timed = {m[0]: float(m[1]) for m in re.findall(
        r'^shipdelay_stream_stage_seconds_count\{stage="([^"]*)"\} (\S+)$', scraped,
        re.MULTILINE)}
    assert timed["parse"] == timed["offset_commit"] == totals["batches"]
