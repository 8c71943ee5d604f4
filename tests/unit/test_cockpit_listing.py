"""The Now list on the server: sorting and paging against pandas' own sort of the same frame,
the whole-array texts against the one-value ones, and the counts and money of a selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cockpit.data import (
    day_hour_texts,
    delay_text,
    delay_texts,
    hours_text,
    hours_texts,
    time_left_text,
    time_left_texts,
)
from cockpit.listing import Listing, summary

NOW = pd.Timestamp("2025-11-20T12:00:00Z")
HUBS = pd.DataFrame({"hub_id": ["H1", "H2", "H3"], "label": ["Rotterdam", "Chicago", "Lyon"]})


def shipments(n: int = 300, seed: int = 3) -> pd.DataFrame:
    """A ranked frame like the cockpit's world (most exposure first), with missing values."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    frame = pd.DataFrame({
        "shipment_id": [f"S{i:04d}" for i in range(n)],
        "customer": rng.choice(["CU1", "CU2", "CU3", None], n),
        "lane": rng.choice(["H1-H2", "H2-H3"], n), "mode": rng.choice(["air", "sea"], n),
        "carrier": rng.choice(["C1", "C2"], n),
        "origin_hub": rng.choice(["H1", "H2"], n), "destination_hub": rng.choice(["H2", "H3"], n),
        "current_hub": rng.choice(["H1", "H2", "H3", "H9"], n),
        "risk_band": np.where(p >= 0.6, "high", np.where(p >= 0.3, "medium", "low")),
        "p_late": p, "delay_p50_h": rng.normal(0, 60, n),
        "promised_at": NOW + pd.to_timedelta(rng.normal(0, 200, n), unit="h"),
        "eta": NOW + pd.to_timedelta(rng.normal(0, 200, n), unit="h"),
        "eta_p10": NOW + pd.to_timedelta(rng.normal(-50, 200, n), unit="h"),
        "eta_p90": NOW + pd.to_timedelta(rng.normal(50, 200, n), unit="h"),
        "exposure": rng.gamma(2, 300, n),
    })
    frame.loc[::17, "delay_p50_h"] = np.nan
    frame.loc[::23, "eta"] = pd.NaT
    frame.loc[5, "exposure"] = frame.loc[6, "exposure"]  # a tie
    return frame.sort_values("exposure", ascending=False, kind="stable").reset_index(drop=True)


@pytest.mark.parametrize(("sort_by", "by", "ascending"), [
    ([{"column_id": "p_late_pct", "direction": "asc"}], ["p_late"], [True]),
    ([{"column_id": "delay", "direction": "desc"}], ["delay_p50_h"], [False]),
    ([{"column_id": "eta", "direction": "asc"}], ["eta"], [True]),
    ([{"column_id": "promise", "direction": "desc"}], ["promised_at"], [False]),
    ([{"column_id": "customer", "direction": "desc"}, {"column_id": "p_late_pct",
                                                       "direction": "asc"}],
     ["customer", "p_late"], [False, True]),
    ([{"column_id": "band", "direction": "desc"}, {"column_id": "exposure",
                                                   "direction": "asc"}],
     ["band_order", "exposure"], [False, True]),
    ([{"column_id": "hub", "direction": "asc"}], ["hub_name"], [True]),
])
def test_sorting_is_pandas_sort_with_missing_last_and_ties_in_rank_order(sort_by, by, ascending):
    frame = shipments()
    listing = Listing.build(frame, HUBS, NOW)
    got = frame["shipment_id"].to_numpy()[listing.order(np.arange(len(frame)), sort_by)]
    ref = frame.assign(rank=np.arange(len(frame)),
                       band_order=frame["risk_band"].map({"low": 0, "medium": 1, "high": 2}),
                       hub_name=frame["current_hub"].map(dict(zip(HUBS["hub_id"],
                                                                   HUBS["label"])))
                       .fillna(frame["current_hub"]))
    want = ref.sort_values(by + ["rank"], ascending=ascending + [True], na_position="last",
                           kind="stable")["shipment_id"].to_numpy()
    assert got.tolist() == want.tolist()


def test_a_filter_selects_pages_cut_and_summarise_the_whole_selection():
    frame = shipments()
    listing = Listing.build(frame, HUBS, NOW)
    chosen = listing.select("{band} scontains high && {hub} = Rotterdam")
    keep = (frame["risk_band"] == "high") & (frame["current_hub"] == "H1")
    assert chosen.problem is None and chosen.positions.tolist() == np.flatnonzero(keep).tolist()
    assert listing.select("{band} scontains high && {hub} = Rotterdam") is chosen  # kept
    page, shown, count = listing.page(chosen.positions, 1, 10)
    assert count == -(-int(keep.sum()) // 10) and shown == 1
    assert page.tolist() == np.flatnonzero(keep)[10:20].tolist()
    assert listing.page(chosen.positions, 99, 10)[1] == count - 1
    counts, total = summary(frame, chosen.positions)
    assert counts == {"high": int(keep.sum()), "medium": 0, "low": 0}
    assert total == pytest.approx(frame.loc[keep, "exposure"].sum())
    bad = listing.select("{band} like high")
    assert bad.problem and len(bad.positions) == len(frame)


def test_whole_array_texts_are_the_one_value_texts():
    rng = np.random.default_rng(0)
    hours = np.concatenate([rng.normal(0, 300, 5000), [np.nan, np.inf, 0.5, -0.5, 1.5, -1.5,
                                                       47.5, 48.0, -47.6, 2.5, 0.0]])
    assert hours_texts(hours).tolist() == [hours_text(h) for h in hours]
    assert time_left_texts(hours).tolist() == [time_left_text(h) for h in hours]
    assert delay_texts(hours).tolist() == [delay_text(h) for h in hours]
    times = pd.Series(pd.Timestamp("1969-12-25T23:59:59Z")
                      + pd.to_timedelta(rng.uniform(0, 3e8, 5000), unit="s"))
    times[7] = pd.NaT
    want = [("-" if pd.isna(t) else t.strftime("%a %d %b %H:%M")) for t in times]
    assert day_hour_texts(times).tolist() == want
