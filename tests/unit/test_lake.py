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
