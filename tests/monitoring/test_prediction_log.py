"""The prediction log: rows written as given (encrypted files, one per day and door), the
service's buffer writes by rows and by time, drops beyond its bound and survives a failing
disk without raising; readers keep one row per key."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.schema import model_feature_names
from monitoring import prediction_log as plog
from monitoring.log_buffer import PredictionBuffer, merge_calls
from monitoring.reader import LogReader, log_days
from shipdelay.crypto import active
from shipdelay.lake import open_lake
from shipdelay.parquet_io import read_table


def _call(n: int, start: str = "2026-01-01T10:00", version: str = "3", seed: int = 0):
    """One scoring call's output and vectors, as the service's frame-free path has them."""
    rng = np.random.default_rng(seed)
    promised = pd.Timestamp(start).to_datetime64() + np.timedelta64(48, "h")
    d50 = rng.normal(size=n) * 5
    hours = lambda h: (h * 3.6e12).astype("m8[ns]")
    scored = {"shipment_id": np.array([f"S{i}" for i in range(n)], dtype=object),
              "p_late": rng.random(n), "delay_p50_h": d50, "delay_p90_h": d50 + 7,
              "eta": (promised + hours(d50)).astype("M8[ns]"),
              "eta_p10": (promised + hours(d50 - 3)).astype("M8[ns]"),
              "eta_p90": (promised + hours(d50 + 7)).astype("M8[ns]"),
              "model_version": np.full(n, version, dtype=object)}
    vectors = {f: rng.normal(size=n) for f in model_feature_names()}
    vectors |= {"main_mode": np.array(["air", None] * (n // 2) + ["air"] * (n % 2),
                                      dtype=object),
                "lane_id": np.full(n, "L1", dtype=object), "shipment_id": scored["shipment_id"],
                "recent_notes": np.array([f"2026-01-01T08:00:00Z held {i}" if i % 3 else None
                                          for i in range(n)], dtype=object)}
    return scored, vectors


def _read(root) -> pd.DataFrame:
    files = [f for fs in log_days(root).values() for f in fs]
    return pd.concat([read_table(f).to_pandas() for f in files], ignore_index=True)


def test_rows_are_written_as_scored_split_by_day_and_encrypted(tmp_path):
    scored, vectors = _call(6)
    # two instants either side of midnight: two day partitions
    instants = pd.Series(pd.to_datetime(["2026-01-01T23:00Z"] * 3 + ["2026-01-02T01:00Z"] * 3))
    plog.write_predictions(tmp_path, plog.prediction_table("stream", scored, vectors, instants))
    days = log_days(tmp_path)
    assert sorted(str(d) for d in days) == ["2026-01-01", "2026-01-02"]
    assert all(f.parent.name == "path=stream" for fs in days.values() for f in fs)
    if active() is not None:  # written through parquet_io: unreadable without the keys
        import pyarrow.parquet as pq

        with pytest.raises(OSError):
            pq.read_table(days[min(days)][0])
    got = _read(tmp_path).sort_values("instant", kind="stable").reset_index(drop=True)
    assert got["shipment_id"].tolist() == scored["shipment_id"].tolist()
    assert np.allclose(got["p_late"], scored["p_late"])
    assert np.allclose(got["delay_p10_h"], scored["delay_p50_h"] - 3)  # from the P10 ETA
    assert np.allclose(got["distance_km"], vectors["distance_km"])
    assert got["main_mode"].isna().tolist() == [False, True] * 3
    assert set(got["model_version"]) == {"3"} and set(got["lane_id"]) == {"L1"}
    assert got["carrier_id"].isna().all()  # not in the vectors: null, not made up


def test_buffer_writes_by_time_and_by_rows(tmp_path):
    scored, vectors = _call(4)
    by_time = PredictionBuffer(tmp_path / "t", flush_s=0.3, flush_rows=1_000)
    by_rows = PredictionBuffer(tmp_path / "r", flush_s=600, flush_rows=10)
    try:
        by_time.add(scored, vectors, pd.Timestamp("2026-01-01T10:00Z"))
        for i in range(3):  # 12 rows: past flush_rows, long before flush_s
            by_rows.add(scored, vectors, pd.Timestamp("2026-01-01T10:00Z") + pd.Timedelta(i, "s"))
        deadline = time.monotonic() + 20
        while (by_time.counts["written"] < 4 or by_rows.counts["written"] < 12) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert by_time.counts["written"] == 4 and by_rows.counts["written"] == 12
        assert len(_read(tmp_path / "t")) == 4 and len(_read(tmp_path / "r")) == 12
    finally:
        by_time.close()
        by_rows.close()


def test_joined_calls_give_the_rows_of_each_call_converted_alone():
    """The buffer joins waiting calls before converting them; the rows must be those each call
    gives alone, whatever the instants came as (one timestamp, aware Series, numpy) and also
    when a call's columns differ (it is kept apart)."""
    calls = []
    for i, n in enumerate([1, 3, 1, 2, 1]):
        scored, vectors = _call(n, seed=i, version=str(i % 2 + 1))
        scored["shipment_id"] = np.array([f"S{i}-{k}" for k in range(n)], dtype=object)
        scored["reasons"] = [["a reason"] * (k % 3) for k in range(n)]  # not logged, any length
        at = pd.Timestamp("2026-01-01T10:00Z") + pd.Timedelta(minutes=7 * i)
        instants = [at, pd.Series([at] * n), np.full(n, at.tz_localize(None).to_datetime64()),
                    at.tz_convert("Asia/Tokyo"), at][i]
        logged = pd.Timestamp("2026-01-02T00:00:00.123456Z") + pd.Timedelta(seconds=i)
        calls.append((scored, vectors, instants, logged, None))
    calls[2][1].pop("main_mode")  # other columns: its own group
    one_by_one = pa.concat_tables([plog.prediction_table("service", *c) for c in calls])
    joined = merge_calls(calls)
    assert len(joined) == 2
    together = pa.concat_tables([plog.prediction_table("service", *c) for c in joined])
    order = lambda t: t.to_pandas().sort_values("shipment_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(order(together), order(one_by_one))
    assert one_by_one.num_rows == 8 and order(one_by_one)["logged_at"].nunique() == 5


def test_buffer_drops_and_counts_beyond_its_bound_and_writes_the_rest_on_close(tmp_path):
    counted: list[tuple[str, int]] = []
    buffer = PredictionBuffer(tmp_path, flush_s=600, flush_rows=1_000, max_rows=25,
                              on_count=lambda o, n: counted.append((o, n)))
    scored, vectors = _call(20)
    buffer.add(scored, vectors, pd.Timestamp("2026-01-01T10:00Z"))
    buffer.add(scored, vectors, pd.Timestamp("2026-01-01T11:00Z"))  # 40 > 25: dropped
    assert buffer.counts["dropped"] == 20 and buffer.counts["written"] == 0
    buffer.close()
    assert buffer.counts == {"written": 20, "dropped": 20, "failed": 0}
    assert counted == [("dropped", 20), ("written", 20)]
    got = _read(tmp_path)
    assert len(got) == 20 and (got["instant"] == pd.Timestamp("2026-01-01T10:00Z")).all()


def test_a_failing_write_is_counted_never_raised(tmp_path):
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log's folder should be")
    buffer = PredictionBuffer(blocker, flush_s=60)
    scored, vectors = _call(5)
    buffer.add(scored, vectors, pd.Timestamp("2026-01-01T10:00Z"))
    assert buffer.flush() == 0
    buffer.close()
    assert buffer.counts == {"written": 0, "dropped": 0, "failed": 5}
    counts: dict = {}
    assert plog.log_now(blocker, "stream", scored, vectors, pd.Timestamp("2026-01-01"),
                        counts) == 0
    assert counts == {"failed": 5}


def test_readers_keep_one_row_per_key(tmp_path):
    scored, vectors = _call(8)
    at = pd.Timestamp("2026-01-01T10:00Z")
    table = plog.prediction_table("stream", scored, vectors, at)
    plog.write_predictions(tmp_path / "log", table)
    plog.write_predictions(tmp_path / "log", table.slice(0, 5))  # a replayed batch
    other = plog.prediction_table("stream", scored, vectors, at + pd.Timedelta(hours=1))
    plog.write_predictions(tmp_path / "log", other.slice(0, 2))  # a later prediction: kept
    day = pd.Timestamp("2026-01-01").date()
    reader = LogReader(tmp_path / "log", open_lake(tmp_path / "lake"),
                       pd.Timestamp("2026-01-02T00:00Z"), day, day)
    counts = reader.counts_by_day()
    kept = reader.sql("SELECT shipment_id, instant FROM log")
    reader.close()
    assert counts["logged"].tolist() == [10] and reader.duplicates == 5
    assert counts["judged"].tolist() == [0]  # no outcome yet
    assert len(kept.drop_duplicates()) == 10


def test_the_notes_are_logged_as_text_with_the_numbers_read_from_them(tmp_path):
    scored, vectors = _call(6)

    def with_notes(v):  # stands for the scorer's note model: counts the notes' characters
        text = [t or "" for t in v["recent_notes"]]
        return {**v, "note_risk": np.array([len(t) / 10 for t in text]),
                "note_latest_risk": np.array([-len(t) / 10 for t in text]),
                "note_count": np.array([float(bool(t)) for t in text])}

    buffer = PredictionBuffer(tmp_path / "with", flush_s=600)
    buffer.add(scored, vectors, pd.Timestamp("2026-01-01T10:00Z"), notes=with_notes)
    buffer.close()
    plog.log_now(tmp_path / "without", "batch", scored, vectors, pd.Timestamp("2026-01-01"))
    got = _read(tmp_path / "with").sort_values("shipment_id", key=lambda s: s.str[1:].astype(int))
    assert got["recent_notes"].tolist() == vectors["recent_notes"].tolist()
    assert got["note_risk"].tolist() == [len(t or "") / 10 for t in vectors["recent_notes"]]
    assert got["note_count"].tolist() == [0.0, 1.0, 1.0] * 2
    plain = _read(tmp_path / "without")
    assert plain["recent_notes"].notna().sum() == 4 and plain["note_risk"].isna().all()
