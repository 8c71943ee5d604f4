"""What the stream end-to-end tests check: the online and offline state against the batch
backfill of the same events, the dead letters, the risk updates; and the SIGKILL scenario, run
once per online store (one file per store, so that test workers run them side by side)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time

import numpy as np
import pandas as pd
import pandas.testing as pdt

from features import offline as off
from features.build import EVENT_COLUMNS, progress_chunks
from features.marks import online_mark
from features.online import online_vectors, read_progress
from features.online_direct import model_vectors
from features.schema import SHIPMENT_PROGRESS, TIMESTAMP, model_feature_names
from features.store import get_store, offline_dir
from features.transforms import latest
from registry.loader import load_by_alias
from serving.kafka import Topics
from serving.scorer import Scorer
from shipdelay.lake import Lake
from tests.integration.stream.conftest import (
    build_stream,
    direct,
    make_case,
    produce,
    read_topic,
    start_stream,
    stop,
    stream_parts,
    wait_exit,
)
from training.dataset import point_in_time

KEY = ["shipment_id", TIMESTAMP]


def _expected(case):
    """The backfill of the same events: every lake event up to the world's end, except those of
    shipments the online store does not know (dead-lettered, as the stream must)."""
    events = Lake(case.settings.lake_dir).read("tracking_events", columns=EVENT_COLUMNS)
    post = events["ingested_at"] >= case.cut
    ids = events.loc[post, "shipment_id"].astype(str).unique().tolist()
    found = direct(case).read("shipment_profile", ids, ["n_legs"])
    known = set(found.loc[found["found"], "shipment_id"].astype(str))
    unknown = post & ~events["shipment_id"].astype(str).isin(known)
    profile = off.read_view(offline_dir(case.settings), "shipment_profile")
    profile = profile.sort_values(TIMESTAMP).drop_duplicates("shipment_id", keep="last")
    rows = pd.concat(list(progress_chunks(events[~unknown], profile)), ignore_index=True)
    return rows, sorted(known), int(unknown.sum())


def assert_equals_backfill(case, stream) -> list[str]:
    expected, known, _ = _expected(case)
    touched = sorted(set(stream.events["shipment_id"].astype(str)) & set(known))
    assert_progress_equals(case, expected, touched)
    return touched


def assert_progress_equals(case, expected: pd.DataFrame, touched: list[str]) -> None:
    """The offline progress view equals `expected` (the backfill's rows), and the online
    progress of the `touched` shipments, read through Feast as the service reads it, equals
    the backfill's latest row of each: every event counted exactly once."""
    offline = off.read_view(offline_dir(case.settings), "shipment_progress")
    pdt.assert_frame_equal(offline[expected.columns].sort_values(KEY, ignore_index=True),
                           expected.sort_values(KEY, ignore_index=True), check_dtype=False,
                           obj="offline progress after the stream")
    online = read_progress(get_store(case.settings), touched).set_index("shipment_id")
    final = latest(expected).set_index("shipment_id").loc[touched]
    assert len(online) == len(touched)
    for col in SHIPMENT_PROGRESS:
        a, b = online.loc[touched, col], final[col]
        if pd.api.types.is_numeric_dtype(b):
            same = np.isclose(a.astype(float), b.astype(float), rtol=1e-9, equal_nan=True)
        else:
            same = a.astype(str).to_numpy() == b.astype(str).to_numpy()
        assert same.all(), (col, a[~same].head(), b[~same].head())
    assert online["event_count"].sum() == final["event_count"].sum()


def assert_dead_letters(case, stream) -> None:
    _, _, unknown_events = _expected(case)
    topics = Topics.from_settings(case.settings)
    records = [json.loads(m.value()) for m in read_topic(case.settings, topics.dead_letters)]
    unique = {(r["partition"], r["offset"]): r for r in records}  # a reprocess may resend
    by_payload: dict[bytes, list[dict]] = {}
    for r in unique.values():
        by_payload.setdefault(base64.b64decode(r["payload_b64"]), []).append(r)
    for payload, reason in stream.bad.items():
        got = by_payload.get(payload, [])
        assert len(got) == 1, (payload, got)
        assert got[0]["reason"].startswith(reason), (payload, got[0]["reason"], reason)
    from_lake = [r for r in unique.values() if r["reason"] == "unknown shipment"
                 and b"SH-NO-SUCH" not in base64.b64decode(r["payload_b64"])]
    assert len(from_lake) == unknown_events
    assert len(unique) == len(stream.bad) + unknown_events


def warm_keys(settings) -> None:
    """Read every offline part once with Arrow's own reader, so that the keys of parts another
    process wrote (the stream's) are unwrapped there and not inside a DuckDB scan of an Arrow
    dataset: there, Arrow's call back into the Python key store was seen to wait for the
    interpreter lock forever."""
    from features.schema import VIEWS
    from shipdelay.parquet_io import dataset

    for view in VIEWS:
        files = sorted(str(p) for p in (offline_dir(settings) / view).rglob("part-*.parquet"))
        if files:
            dataset(files).to_table(columns=[TIMESTAMP])


def assert_risk_updates(case, touched: list[str]) -> None:
    """The last risk update of each shipment is the shared scorer's answer on the batch's
    point-in-time join at that update's instant (its state, statistics and weather then)."""
    topics = Topics.from_settings(case.settings)
    updates = [json.loads(m.value()) for m in read_topic(case.settings, topics.risk)]
    last = pd.DataFrame(updates).drop_duplicates("shipment_id", keep="last").set_index(
        "shipment_id")
    assert set(touched) <= set(last.index)
    moving = [t for t in touched if not last.loc[t, "delivered"]]
    snaps = pd.DataFrame({"shipment_id": moving,
                          "as_of": pd.to_datetime(last.loc[moving, "as_of"], utc=True).to_numpy()})
    snaps["as_of"] = pd.to_datetime(snaps["as_of"], utc=True)
    warm_keys(case.settings)
    joined = point_in_time(offline_dir(case.settings), snaps).set_index("shipment_id").loc[moving]
    expected = Scorer(load_by_alias(case.settings)).score(joined.reset_index(), reasons=False)
    assert len(moving) > 20
    assert np.allclose(last.loc[moving, "p_late"].to_numpy(float), expected["p_late"].to_numpy(),
                       atol=2e-6)  # scores travel with 6 decimals


def assert_alerts(case) -> None:
    """Every alert names its rule, is at or above the threshold or a jump above the score before
    it, and carries its reasons in words."""
    topics = Topics.from_settings(case.settings)
    alerts = [json.loads(m.value()) for m in read_topic(case.settings, topics.alerts)]
    assert alerts, "the stream raised no alert"
    for a in alerts:
        assert a["kind"] in ("crossed threshold", "jumped", "crossed threshold and jumped"), a
        before = a["previous_p_late"]
        if "crossed" in a["kind"]:
            # (scores travel with 6 decimals)
            assert a["p_late"] >= a["threshold"] - 1e-6, a
            assert before is None or before < a["threshold"] + 1e-6, a
        if "jumped" in a["kind"]:
            assert before is not None and a["p_late"] - before > a["jump"] - 1e-6, a
        assert 1 <= len(a["reasons"]) <= 3 and all(isinstance(r, str) and r for r in a["reasons"])
        assert a["alert_id"].startswith(a["shipment_id"] + "@")


def assert_direct_vectors_equal_feast(case, ids: list[str]) -> None:
    """At the online store's roll mark (the stream's clock when it stopped), the stream's
    direct reads give the FeatureService's vectors exactly as Feast does, and those are the
    batch's point-in-time join at that instant."""
    store = direct(case)
    now = online_mark(store)
    assert now is not None and now > case.cut
    feast = online_vectors(get_store(case.settings), ids, now).set_index("shipment_id")
    profile, progress = store.read("shipment_profile", ids), store.read("shipment_progress", ids)
    mine = model_vectors(store, profile, progress, now).set_index("shipment_id")
    warm_keys(case.settings)
    joined = point_in_time(offline_dir(case.settings), pd.DataFrame(
        {"shipment_id": ids, "as_of": now})).set_index("shipment_id")
    assert feast.loc[ids, "known"].all() and joined.loc[ids, "booked_at_s"].notna().all()
    for col in model_feature_names():
        for other in (feast, joined):
            a, b = mine.loc[ids, col], other.loc[ids, col]
            if pd.api.types.is_numeric_dtype(b) or pd.api.types.is_numeric_dtype(a):
                same = np.isclose(pd.to_numeric(a).astype(float),
                                  pd.to_numeric(b).astype(float), rtol=1e-12, equal_nan=True)
            else:
                same = (a.isna().to_numpy() & b.isna().to_numpy()) | (
                    a.astype(str).to_numpy() == b.astype(str).to_numpy())
            assert same.all(), (col, a[~same].head(3), b[~same].head(3))


def applied_events(log) -> int:
    found = re.findall(r'"applied": (\d+)', log.read_text())
    return int(found[-1]) if found else 0


def sigkill_and_restart(stream_world, kafka, tmp_path, store: str) -> None:
    """Kill `shipdelay stream` with SIGKILL mid-stream twice, restart it to the end, and
    check nothing was lost or counted twice."""
    case = make_case(stream_world, tmp_path / "data", store, kafka)
    stream = build_stream(case.settings, case.cut)
    produce(case.settings, stream)
    log = tmp_path / "stream.log"
    rng = np.random.default_rng(7)
    procs = []
    try:
        for kill in range(2):
            before = stream_parts(case)
            proc = start_stream(case, log=log)
            procs.append(proc)
            deadline = time.monotonic() + 180
            while stream_parts(case) < before + 3:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no progress:\n" + log.read_text()[-3000:]
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 1.0))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        before = stream_parts(case)
        final = start_stream(case, "--idle-exit", "5", log=log)
        procs.append(final)
        wait_exit(final, 300, log)
    finally:
        for proc in procs:
            stop(proc)
    assert stream_parts(case) > before, "the kills left nothing for the last run: not mid-stream"
    progress_dir = offline_dir(case.settings) / "shipment_progress"
    assert not list(progress_dir.glob("*/.staged-*")), "a killed batch's staged rows remain"
    touched = assert_equals_backfill(case, stream)
    assert_dead_letters(case, stream)
    assert_risk_updates(case, touched)
    assert_alerts(case)
    assert_direct_vectors_equal_feast(case, touched[:80])
