"""Tracking notes in a shipment's progress state: the text of its most recent notes.

Notes are free text in whatever words a company's drivers, agents and customs brokers use, so
the feature pipeline keeps the text itself, not classes read from it: `recent_notes` holds the
`MAX_NOTES` notes with the greatest (event time, text) among all the shipment's notes seen so
far, newest first, one per line, each as `<UTC event time to the second> <text>`:

    2025-10-03T14:05:00Z typhoon warning - wx delay
    2025-10-02T09:12:31Z loaded

What the text means is learned at training time from the training window
(`training.note_model`), so the same state serves any wording in any language.

The fold is commutative and idempotent: the newest `MAX_NOTES` of (prior notes + new notes) are
the newest of all notes, whatever the order of the events and however they were split into
batches, and a note seen twice (same time, same text) counts once. It is vectorized across
shipments; the only loop runs over the i-th ingestion moment that brought notes, shipment by
shipment in parallel (a handful of steps in a micro-batch).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

RECENT_NOTES = "recent_notes"
MAX_NOTES = 8  # notes kept per shipment
MAX_NOTE_CHARS = 200  # longer notes are cut: the state stays small online
SEPARATOR = "\n"
STAMP_CHARS = len("2025-10-03T14:05:00Z ")
_STAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
_CONTROL = r"[\x00-\x1f\x7f]+"  # line breaks and tabs inside a note become one space
_STAMP_ASCII = re.compile(_STAMP, re.ASCII)  # \d as Arrow's RE2 reads it: 0-9 only
FEW = 512  # up to this many rows, `note_codes` works in Python: Arrow's eight calls cost
# ~0.2 ms whatever the rows, Python ~0.7 us a row (100 rows: 0.07 vs 0.23 ms; even at 500)


def clean_notes(notes: pd.Series) -> pd.Series:
    """Notes as one-line text cut to MAX_NOTE_CHARS; null where blank or missing. Runs on the
    distinct notes only (notes repeat a lot)."""
    codes, uniques = pd.factorize(pd.Series(notes).astype("string"))
    text = pd.Series(np.asarray(uniques, dtype=object), dtype="string")
    text = (text.str.replace(_CONTROL, " ", regex=True).str.strip()
            .str.slice(0, MAX_NOTE_CHARS).str.strip())
    text = text.where(text.str.len() > 0)
    out = np.append(text.to_numpy(dtype=object, na_value=None), None)[codes]
    return pd.Series(out, index=pd.Series(notes).index, dtype=object)


def note_entries(notes: pd.Series, event_time_ns: np.ndarray) -> np.ndarray:
    """`<UTC second> <text>` per event (None where the event has no note)."""
    text = clean_notes(notes).to_numpy(dtype=object)
    has = ~pd.isna(text)
    out = np.full(len(text), None, dtype=object)
    if has.any():  # time stamps of the events with a note only (formatting costs ~2 us each)
        seconds = np.asarray(event_time_ns, dtype="int64")[has].astype("M8[ns]").astype("M8[s]")
        joined = pc.binary_join_element_wise(
            pa.array(np.datetime_as_string(seconds, unit="s"), pa.string()),
            pa.array(text[has], pa.string()), "Z ")
        out[has] = joined.to_numpy(zero_copy_only=False)
    return out


def _lines(states) -> tuple[np.ndarray, pa.Array]:
    """(row, line) of every non-empty line of `recent_notes` values, the lines in Arrow."""
    lists = pc.split_pattern(_strings(states), SEPARATOR)
    flat = pc.list_flatten(lists)
    keep = pc.greater(pc.utf8_length(flat), 0)
    rows = pc.list_parent_indices(lists).filter(keep)
    return rows.to_numpy(zero_copy_only=False).astype(np.int64), flat.filter(keep)


def split_entries(states) -> tuple[np.ndarray, np.ndarray]:
    """(row, entry) of every line of `recent_notes` values; anything not a string is no notes."""
    rows, lines = _lines(states)
    return rows, np.asarray(lines.to_numpy(zero_copy_only=False), dtype=object)


def note_codes(states) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every line of `recent_notes` values as (row, code) with the distinct note texts the codes
    point into (time stamps dropped; a line without one is all text): lines come row by row,
    newest first. Many rows stay in Arrow until the distinct texts, which is what the scorer
    pays for; a few (a request's) are coded in Python, where Arrow's per-call cost dominates."""
    return _few_codes(states) if len(states) <= FEW else _arrow_codes(states)


def _arrow_codes(states) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`note_codes` in Arrow: a few calls whatever the number of rows."""
    rows, flat = _lines(states)
    stamped = pc.match_substring_regex(flat, _STAMP)
    texts = pc.if_else(stamped, pc.utf8_slice_codeunits(flat, STAMP_CHARS), flat)
    encoded = pc.dictionary_encode(texts)
    return (rows, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            np.asarray(encoded.dictionary.to_pylist(), dtype=object))


def _few_codes(states) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`note_codes` of a few rows (the service's requests), the same answer in plain Python:
    under 1 us a row where Arrow's eight calls cost about 0.2 ms whatever the rows."""
    if isinstance(states, pd.Series):
        states = states.to_numpy(dtype=object, na_value=None)
    rows: list[int] = []
    codes: list[int] = []
    distinct: dict[str, int] = {}
    for i, state in enumerate(np.asarray(states, dtype=object).tolist()):
        if not isinstance(state, str):  # null, NaN, a number: no notes (as `_strings`)
            continue
        for line in state.split(SEPARATOR):
            if line:
                text = line[STAMP_CHARS:] if _STAMP_ASCII.match(line) else line
                rows.append(i)
                codes.append(distinct.setdefault(text, len(distinct)))
    return (np.array(rows, dtype=np.int64), np.array(codes, dtype=np.int64),
            np.array(list(distinct), dtype=object))


def _strings(values) -> pa.Array:
    """Values as an Arrow string array: text as it is, anything else (null, NaN, a number a
    what-if request sent) as null."""
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=object, na_value=None)
    values = np.asarray(values, dtype=object)
    try:
        return pa.array(values, pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        text = np.array([v if isinstance(v, str) else None for v in values.tolist()], dtype=object)
        return pa.array(text, pa.string(), from_pandas=True)


def note_texts(entries: np.ndarray) -> np.ndarray:
    """The text of each entry, its time stamp dropped (a line without one is all text)."""
    out = pc.replace_substring_regex(pa.array(entries, pa.string()), _STAMP, "")
    return np.asarray(out.to_numpy(zero_copy_only=False), dtype=object)


def fold_recent_notes(group: np.ndarray, moment: np.ndarray, entries: np.ndarray,
                      prior: np.ndarray, out_group: np.ndarray,
                      out_moment: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """`recent_notes` at each output row (shipment `out_group` after its ingestion moment
    `out_moment`): the MAX_NOTES greatest entries among the group's `prior` state and its
    entries (`group`, `moment`, entry; None = no note) at moments <= the row's, newest first.
    Moments are integers (ingestion nanoseconds); `prior` holds one state string per group
    ("" or None: none). The text stays in Arrow: only integer codes of it are sorted here."""
    p_rows, p_lines = _lines(prior)
    entries = np.asarray(entries, dtype=object)
    has = entries != None  # elementwise: entries are text or None
    g = np.concatenate([p_rows, np.asarray(group, np.int64)[has]])
    m = np.concatenate([np.full(len(p_rows), np.iinfo(np.int64).min),
                        np.asarray(moment, np.int64)[has]])
    codes, uniques = _ranked(pa.concat_arrays([p_lines, pa.array(entries[has], pa.string())]))
    if len(g) == 0:
        return _text_array(pa.nulls(len(out_group), pa.string()))
    # each (group, entry) once, at its first moment; then steps over the moments that bring notes
    order = np.lexsort((m, codes, g))
    g, m, codes = g[order], m[order], codes[order]
    first = np.r_[True, (g[1:] != g[:-1]) | (codes[1:] != codes[:-1])]
    g, m, codes = g[first], m[first], codes[first]
    order = np.lexsort((m, g))
    g, m, codes = g[order], m[order], codes[order]
    new_moment = np.r_[True, (g[1:] != g[:-1]) | (m[1:] != m[:-1])]
    step_id = np.cumsum(new_moment) - 1  # one id per (group, moment), in (group, moment) order
    step_g, step_m = g[new_moment], m[new_moment]
    group_start = np.r_[True, step_g[1:] != step_g[:-1]]
    step_no = np.arange(len(step_g)) - np.maximum.accumulate(
        np.where(group_start, np.arange(len(step_g)), 0))
    snaps = np.full((len(step_g), MAX_NOTES), -1, np.int64)
    kept = np.full((int(g.max()) + 1, MAX_NOTES), -1, np.int64)  # each group's newest so far
    # entries and steps ordered by step number, so that step j is one slice of each
    by_step = np.argsort(step_no, kind="stable")
    step_bounds = np.searchsorted(step_no[by_step], np.arange(int(step_no.max()) + 2))
    entry_no = step_no[step_id]
    by_entry = np.argsort(entry_no, kind="stable")
    entry_bounds = np.searchsorted(entry_no[by_entry], np.arange(int(step_no.max()) + 2))
    for j in range(int(step_no.max()) + 1):
        steps = by_step[step_bounds[j]:step_bounds[j + 1]]
        at = by_entry[entry_bounds[j]:entry_bounds[j + 1]]
        sg = np.concatenate([np.repeat(step_g[steps], MAX_NOTES), g[at]])
        sc = np.concatenate([kept[step_g[steps]].ravel(), codes[at]])
        sg, sc = sg[sc >= 0], sc[sc >= 0]
        o = np.lexsort((-sc, sg))
        sg, sc = sg[o], sc[o]
        start = np.r_[True, sg[1:] != sg[:-1]]
        pos = np.arange(len(sg)) - np.maximum.accumulate(np.where(start, np.arange(len(sg)), 0))
        top = pos < MAX_NOTES
        rows = np.searchsorted(step_g[steps], sg[top])  # steps are in group order
        block = np.full((len(steps), MAX_NOTES), -1, np.int64)
        block[rows, pos[top]] = sc[top]
        snaps[steps] = block
        kept[step_g[steps]] = block
    # each output row reads the last step of its group at or before its moment
    ranks = np.sort(np.concatenate([step_m, np.asarray(out_moment, np.int64)]))
    ranks = ranks[np.r_[True, ranks[1:] != ranks[:-1]]]
    width = np.int64(len(ranks) + 1)
    step_key = step_g * width + np.searchsorted(ranks, step_m)
    out_key = np.asarray(out_group, np.int64) * width + np.searchsorted(ranks, out_moment)
    at = np.searchsorted(step_key, out_key, side="right") - 1
    found = (at >= 0) & (step_g[np.maximum(at, 0)] == out_group)
    text = _render(snaps, uniques)
    return _text_array(text.take(pa.array(np.where(found, at, 0), mask=~found)))


def _text_array(text: pa.Array) -> pd.api.extensions.ExtensionArray:
    """Arrow text as the state's string column, missing as "" (no notes)."""
    return pd.arrays.ArrowStringArray(pa.chunked_array([pc.fill_null(text, "")]))


def _ranked(entries: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Codes of the entries in the order of their text (equal text, equal code) and the
    distinct texts in that order, sorted by Arrow."""
    encoded = pc.dictionary_encode(entries)
    order = pc.array_sort_indices(encoded.dictionary).to_numpy(zero_copy_only=False)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return rank[codes], encoded.dictionary.take(pa.array(order))


def _render(snaps: np.ndarray, uniques: pa.Array) -> pa.Array:
    """Each row of entry codes (newest first, -1 = none) as one string, lines joined."""
    valid = snaps >= 0
    offsets = np.r_[0, np.cumsum(valid.sum(axis=1))].astype(np.int32)
    flat = uniques.take(pa.array(snaps[valid]))
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), flat), SEPARATOR)


__all__ = ["MAX_NOTES", "RECENT_NOTES", "clean_notes", "fold_recent_notes", "note_codes",
           "note_entries", "note_texts", "split_entries"]
