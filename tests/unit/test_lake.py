"""The lake writes atomically, partitions by day and skips rows it already holds."""

from __future__ import annotations

import pandas as pd
import pytest

from shipdelay.lake import Lake, open_lake


def _outcomes(ids, day="2026-01-02"):
    t = pd.Timestamp(day, tz="UTC")
    return pd.DataFrame({"shipment_id": ids, "delivered_at": [t] * len(ids),
                         "promised_at": [t - pd.Timedelta(hours=2)] * len(ids),
                         "delay_hours": [2.0] * len(ids), "is_late": [True] * len(ids)})


def test_append_partitions_by_day_and_skips_existing(tmp_path):
    lake = open_lake(tmp_path / "lake")
    assert lake.append("outcomes", _outcomes(["a", "b"])) == 2
    assert lake.append("outcomes", _outcomes(["c"], "2026-01-05")) == 1
    days = sorted(p.name for p in (lake.root / "outcomes").iterdir())
    assert days == ["day=2026-01-02", "day=2026-01-05"]
    assert lake.append("outcomes", _outcomes(["a", "c", "d", "d"]), skip_existing=True) == 1
    assert sorted(lake.read("outcomes")["shipment_id"]) == ["a", "b", "c", "d"]
    assert len(lake.files("outcomes", since=pd.Timestamp("2026-01-03").date())) == 1


def test_invalid_rows_never_reach_the_lake(tmp_path):
    lake = open_lake(tmp_path / "lake")
    bad = _outcomes(["a"])
    bad["delay_hours"] = 5.0  # contradicts delivered - promised
    with pytest.raises(Exception, match="delay_hours"):
        lake.append("outcomes", bad)
    assert not lake.exists("outcomes")


def test_sub_microsecond_keys_still_deduplicate(tmp_path):
    lake = open_lake(tmp_path / "lake")
    t = pd.Timestamp("2026-01-01 10:00:00.123456789", tz="UTC")
    row = pd.DataFrame({"shipment_id": ["s"], "as_of": [t], "p_late": [0.3], "draws": [10]})
    lake.append("ceiling", row, skip_existing=True)
    assert lake.append("ceiling", row, skip_existing=True) == 0


def test_rewrite_swaps_atomically_and_keeps_old_on_error(tmp_path):
    link = tmp_path / "lake"
    with Lake.rewrite(link) as lake:
        lake.append("outcomes", _outcomes(["a"]))
    first = link.resolve()
    with pytest.raises(ValueError), Lake.rewrite(link) as lake:
        lake.append("outcomes", _outcomes(["b"]))
        raise ValueError("boom")
    assert link.resolve() == first and list(Lake(link).read("outcomes")["shipment_id"]) == ["a"]
    with Lake.rewrite(link) as lake:
        lake.append("outcomes", _outcomes(["c"]))
    assert link.resolve() != first and not first.exists()
    assert list(Lake(link).read("outcomes")["shipment_id"]) == ["c"]


def test_next_writer_removes_what_a_dead_writer_left(tmp_path):
    """A writer that died (its pending marker, a data file, a half-written temporary in a day
    folder of its own) leaves nothing visible, and the next write removes all of it."""
    from shipdelay.lake_commits import PENDING

    lake = open_lake(tmp_path / "lake")
    lake.append("outcomes", _outcomes(["a"]))
    dead = "deadbeefdeadbeef"
    (lake.root / PENDING / dead).write_bytes(b"")
    orphan = lake.root / "outcomes" / "day=2026-01-02" / f"part-{dead}-1.parquet"
    orphan.write_bytes((next((lake.root / "outcomes").rglob("part-*.parquet"))).read_bytes())
    half = lake.root / "outcomes" / "day=2026-01-09" / f".part-{dead}-2.parquet.0a1b2c3d.tmp"
    half.parent.mkdir()
    half.write_bytes(b"PAR1 half a file")
    assert list(lake.read("outcomes")["shipment_id"]) == ["a"]  # the orphan is not seen
    lake.append("outcomes", _outcomes(["b"]))
    assert sorted(lake.read("outcomes")["shipment_id"]) == ["a", "b"]
    assert not orphan.exists() and not half.exists() and not half.parent.exists()
    assert not list((lake.root / PENDING).iterdir())


def test_a_failed_transaction_leaves_nothing(tmp_path):
    lake = open_lake(tmp_path / "lake")
    with pytest.raises(RuntimeError), lake.transaction():
        lake.append("outcomes", _outcomes(["a"]))
        lake.append("outcomes", _outcomes(["b"], "2026-01-07"))
        assert sorted(lake.read("outcomes")["shipment_id"]) == ["a", "b"]  # its own writes
        raise RuntimeError("boom")
    assert not lake.exists("outcomes")
    assert not list((lake.root / "outcomes").rglob("*.parquet"))
