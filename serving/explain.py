"""Which reasons a scored row gets: kept ones while they are valid, computed ones otherwise.

Reasons are LightGBM's TreeSHAP on the row's model vector (`serving.reasons`), the costliest
step of an answer by far. They are computed where a shipment's state changes (the stream, the
nightly batch: `explain`) and kept in the online store (`serving.reasons_store`); the service
serves them (`serve`) when they are valid for the vector it scores:

- the same model version;
- the same state: every model input but the four clock features (`features.schema.ON_DEMAND`:
  hours to the promise, share of the transit elapsed, hours since the last scan, hours
  overdue), bit for bit as the model reads them (categories as the model's codes, notes as its
  note scores; every NaN one NaN, -0 as 0), and the same note texts quoted (`states`);
- kept for an instant `at` no later than the answer's and at most `max_age_s` before it.

A new scan, a new plan, a rolled statistic (lanes, carriers and customers at midnight, hubs at
each hour end) or new weather changes the state, so reasons kept before are not served: they
are computed for the answer (and remembered in the worker a while, `ReasonsMemory`). Valid
kept reasons are TreeSHAP of the shipment's vector at `at`: its state now, its clock features
then; each answer says which instant its reasons explain (`reasons_at`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from features.request_time import REQUEST_TIME
from serving.columns import as_array
from serving.reasons_memory import ReasonsMemory
from serving.reasons_store import Reasons

MAX_AGE_S = 3600.0  # hub statistics and weather roll every hour: state rarely outlives it
Lookup = Callable[[Sequence[str]], Sequence[Reasons | None]]


def states(scorer, X: np.ndarray, vectors: Mapping, rows: np.ndarray) -> list[str]:
    """The state digest of `rows` (hex, 128 bits): see the module docstring."""
    lasting = X[np.ix_(rows, scorer._lasting)]
    lasting = np.where(np.isnan(lasting), np.nan, lasting) + 0.0
    data, width = np.ascontiguousarray(lasting).tobytes(), lasting.shape[1] * 8
    quotes = [as_array(vectors[c])[rows].tolist() for c in scorer._quotes if c in vectors]
    if quotes:  # each text after its length in bytes; a missing one as length 2**32 - 1
        tails = [b"".join(_sized(t) for t in texts) for texts in zip(*quotes)]
    else:
        tails = [b""] * len(rows)
    blake = hashlib.blake2b
    return [blake(data[i * width:(i + 1) * width] + tail, digest_size=16).hexdigest()
            for i, tail in enumerate(tails)]


def _sized(text) -> bytes:
    if not isinstance(text, str):
        return b"\xff\xff\xff\xff"
    data = text.encode()
    return len(data).to_bytes(4, "little") + data


def _request_times(vectors: Mapping, rows: np.ndarray) -> np.ndarray:
    """The rows' instants in epoch seconds, to the microsecond (as the store's timestamps and
    pandas' `timestamp()` are), so that one instant is one number whichever way it was made."""
    return np.round(np.asarray(vectors[REQUEST_TIME], dtype=float)[rows], 6)


def explain(scorer, vectors: Mapping, rows: np.ndarray | None = None) -> list[Reasons]:
    """Reasons of `rows` of `vectors` (all when None; they carry `shipment_id` and the request
    time), with what they explain: the records the stream and the batch keep. Only `rows`
    are made into model vectors (the batch explains 2,000 of a million)."""
    if rows is not None:
        rows = np.asarray(rows, dtype=int)
        if not len(rows):
            return []
        vectors = (vectors.iloc[rows].reset_index(drop=True) if hasattr(vectors, "iloc")
                   else {c: as_array(v)[rows] for c, v in vectors.items()})
    vectors = scorer.with_notes(vectors)
    X = scorer._matrix(vectors)
    rows = np.arange(len(X))
    if not len(rows):
        return []
    some = {c: as_array(vectors[c])[rows] for c in scorer._explained if c in vectors}
    top, words = scorer._reasons(X[rows], some)
    ids = as_array(vectors["shipment_id"])[rows].tolist()
    return [Reasons(str(i), scorer.version, s, float(t), tuple(p), tuple(w))
            for i, s, t, p, w in zip(ids, states(scorer, X, vectors, rows),
                                     _request_times(vectors, rows).tolist(), top, words)]


def serve(scorer, X: np.ndarray, vectors: Mapping, rows: np.ndarray, n: int,
          memory: ReasonsMemory | None = None, stored: Lookup | None = None,
          max_age_s: float = MAX_AGE_S) -> tuple[list[list[str]], np.ndarray]:
    """Reasons for the rows `rows` of an answer of `n` rows ([] for the others) and the instant
    each explains (epoch seconds, NaN: none): kept ones from `stored` where valid, then those
    `memory` recalls, the rest computed at the rows' own instant."""
    out: list[list[str]] = [[] for _ in range(n)]
    at = np.full(n, np.nan)
    if not len(rows):
        return out, at
    now = _request_times(vectors, rows) if REQUEST_TIME in vectors else np.full(len(rows), np.nan)
    todo = np.ones(len(rows), bool)
    if stored is not None:
        ids = as_array(vectors["shipment_id"])[rows].tolist()
        kept = stored(ids)
        digests = states(scorer, X, vectors, rows)
        for j, (r, s, t) in enumerate(zip(kept, digests, now.tolist())):
            # instants compared to the microsecond: epoch seconds as floats round differently
            # depending on how they were made (pandas' `timestamp()` rounds to microseconds)
            if r is not None and r.version == scorer.version and r.state == s \
                    and 0 <= round((t - r.at) * 1e6) <= max_age_s * 1e6:
                out[rows[j]], at[rows[j]] = list(r.words), r.at
                todo[j] = False
    left = np.flatnonzero(todo)  # positions in `rows` still without reasons
    if memory is not None and len(left):
        keys = memory.keys(scorer.version, as_array(vectors["shipment_id"])[rows[left]],
                           X[np.ix_(rows[left], scorer._lasting)])
        missing = []
        for j, got, key in zip(left.tolist(), memory.recall(keys), keys):
            if got is None:
                missing.append((j, key))
            else:
                out[rows[j]], at[rows[j]] = got
        left = np.array([j for j, _ in missing], dtype=int)
        keys = [k for _, k in missing]
    if len(left):
        where = rows[left]
        some = {c: as_array(vectors[c])[where] for c in scorer._explained if c in vectors}
        _, words = scorer._reasons(X[where], some)
        for p, w, t in zip(where.tolist(), words, now[left].tolist()):
            out[p], at[p] = w, t
        if memory is not None:
            memory.keep(keys, list(zip(words, now[left].tolist())))
    return out, at
