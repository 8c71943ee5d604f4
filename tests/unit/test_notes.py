"""The recent-notes fold: at every state row, the newest MAX_NOTES notes (by event time, then
text) of all the shipment's notes ingested by then, whatever the order of the events and the
batches they come in; checked against a plain per-shipment definition."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.notes import MAX_NOTES, clean_notes, note_entries, note_texts
from features.schema import TIMESTAMP
from features.transforms import advance_progress, latest

_spec = importlib.util.spec_from_file_location(
    "transforms_cases", Path(__file__).with_name("test_transforms.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def by_definition(events: pd.DataFrame, states: pd.DataFrame) -> list[str]:
    """recent_notes of each state row, one shipment and one moment at a time."""
    ev = events.drop_duplicates("event_id").copy()  # shipped events' ids name one event each
    first = events.groupby("event_id")["ingested_at"].min()
    ev["ingested_at"] = ev["event_id"].map(first)
    ev["text"] = clean_notes(ev["note"])
    ev = ev[ev["text"].notna()]
    stamp = ev["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ ")
    ev["entry"] = stamp + ev["text"]
    out = []
    for sid, at in zip(states["shipment_id"], states[TIMESTAMP]):
        seen = ev[(ev["shipment_id"] == sid) & (ev["ingested_at"] <= at)]["entry"]
        out.append("\n".join(sorted(set(seen), reverse=True)[:MAX_NOTES]))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_the_fold_keeps_the_newest_notes_by_definition(seed):
    events, plans = cases.messy_world(seed, n_ship=40)
    states = advance_progress(None, events, plans)
    assert states["recent_notes"].tolist() == by_definition(events, states)
    kept = max(len(s.split("\n")) for s in states["recent_notes"].tolist() if s)
    assert kept == MAX_NOTES  # the world writes more notes than are kept


@pytest.mark.parametrize("seed", range(3))
def test_notes_in_any_order_and_any_batches_fold_alike(seed):
    events, plans = cases.messy_world(seed)
    final = latest(advance_progress(None, events, plans))
    rng = np.random.default_rng(seed)
    shuffled = events.iloc[rng.permutation(len(events))]
    store, seen = None, set()
    for part in np.array_split(shuffled, 5):  # batches not cut by time, events in any order
        part = part[~part["event_id"].isin(seen)]
        if part.empty:
            continue
        rows = latest(advance_progress(store, part, plans))
        seen |= set(part["event_id"])
        store = rows if store is None else pd.concat([store, rows]).drop_duplicates(
            "shipment_id", keep="last")  # the newest fold, even of events ingested earlier
    got = store.set_index("shipment_id")["recent_notes"]
    want = final.set_index("shipment_id")["recent_notes"]
    assert got.sort_index().tolist() == want.sort_index().tolist()


def test_entries_are_one_line_stamped_to_the_second_and_texts_come_back():
    notes = pd.Series(["  typhoon\nwarning\t", None, "   ", "ok", "x" * 300], dtype="string")
    times = pd.to_datetime(["2025-10-01T08:00:00.7", "2025-10-01T00:00", "2025-10-01T00:00",
                            "2025-10-02T09:30:05", "2025-10-03T00:00"], format="ISO8601", utc=True)
    entries = note_entries(notes, times.as_unit("ns").asi8)
    assert entries[:4].tolist() == ["2025-10-01T08:00:00Z typhoon warning", None, None,
                                    "2025-10-02T09:30:05Z ok"]
    assert len(note_texts(entries[4:])[0]) == 200
    assert note_texts(np.array(["2025-10-01T08:00:00Z typhoon warning", "no stamp here"],
                               dtype=object)).tolist() == ["typhoon warning", "no stamp here"]


def test_hub_statistics_count_notes_whatever_they_say():
    from features.tables import hub_stats
    from shipdelay import contract

    events = cases.make_events([("a", "S1", "picked_up", 0, 0.5, 1.2, "Verspätung wegen Sturm"),
                                ("b", "S1", "departed", 0, 2.0, 2.5, "   "),
                                ("c", "S2", "picked_up", 0, 2.0, 2.6, "zibbo klar"),
                                ("d", "S2", "departed", 0, 3.0, 3.1)])
    legs = contract.validate("legs", pd.DataFrame({c: [] for c in contract.columns("legs")}))
    got = hub_stats(events, legs, cases.T0, cases.T0 + pd.Timedelta(hours=30))
    counts = got.set_index(TIMESTAMP)["hub_notes_24h"]
    hour = pd.Timedelta(hours=1)
    # a note counts from the hour end after its ingestion, for 24 hours; a blank one never
    assert counts[cases.T0 + 2 * hour] == 1 and counts[cases.T0 + 3 * hour] == 2
    assert counts[cases.T0 + 25 * hour] == 2 and counts[cases.T0 + 26 * hour] == 1
    assert counts[cases.T0 + 27 * hour] == 0


def test_few_rows_give_the_codes_arrow_gives():
    """A request's few rows are coded in Python (`note_codes` below FEW rows), the rest in
    Arrow: on states nobody writes on purpose the two agree exactly, row for row."""
    from features.notes import FEW, _arrow_codes, _few_codes, note_codes

    odd = ["2026-01-01T08:00:00Z held at customs\n2025-12-31T23:59:59Z loaded",
           "no stamp at all", "", "\n\n", "\nleading\n\ntrailing\n", None, np.nan, 17, 2.5,
           "2026-01-01T08:00:00Z ", "2026-01-01T08:00:00Z",  # a stamp alone, one cut short
           "٢٠٢٦-01-01T08:00:00Z Arabic-Indic digits are not a stamp",
           "2026-01-01T08:00:00Z 2026-01-01T08:00:00Z a stamp in the text",
           "2026-01-01 08:00:00Z a space, not a T", "x\r\ny", "日本語のメモ\n2026-01-01T08:00:00Z 日本",
           "2026-01-01T08:00:00Z held at customs"]  # a text again: one code
    rng = np.random.default_rng(5)
    for trial in range(200):
        n = int(rng.integers(1, FEW + 1))
        states = np.array([odd[i] for i in rng.integers(0, len(odd), n)], dtype=object)
        few, arrow = _few_codes(states), _arrow_codes(states)
        for got, want in zip(few, arrow):
            assert got.tolist() == want.tolist(), (trial, states)
        assert few[0].dtype == few[1].dtype == np.int64 and few[2].dtype == object
    series = pd.Series(["a\nb", None], index=[7, 3])  # a Series keeps its values' order
    assert [x.tolist() for x in note_codes(series)] == [[0, 0], [0, 1], ["a", "b"]]
