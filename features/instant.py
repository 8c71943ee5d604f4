"""The value of a feature at an instant: one rule for the offline join and every online read.

A feature view's value for an entity at instant `t` is its row with the newest timestamp at or
before `t`, when that timestamp is no older than the view's TTL (`features.repo.views.TTL`);
otherwise it is missing. That is Feast's point-in-time rule, which the training set and the
nightly batch apply offline (`training.dataset.point_in_time`). The online store holds one row
per entity and view (the newest a build or a roll loaded, `features.roll`), so an online reader
serves that row at `t` only when it is `present` (stamped at or before `t`) and `fresh` (not
older than the TTL); a row stamped after `t` is the value of a later instant, a row older than
the TTL a value the offline join no longer gives.

Timestamps are handled as epoch microseconds in float64 arrays (exact below 2^53, i.e. for any
date before the year 2255), NaN where an entity has no row. Feast's Redis store keeps them to
the microsecond, its SQLite store in whole seconds: on SQLite a row stamped within the second
before `t` (or whose age reaches the TTL within that second) is judged by its whole second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.repo.views import TTL

TTL_US = {view: ttl.total_seconds() * 1e6 for view, ttl in TTL.items()}
STAMP = "__event_ts__"  # the pseudo-feature an online read returns each row's timestamp in


def micros(t) -> float:
    """An instant (pandas/ISO/datetime; naive = UTC) as epoch microseconds."""
    ts = t if isinstance(t, pd.Timestamp) else pd.Timestamp(t)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return float(ts.value // 1000)  # .value is UTC nanoseconds whatever the zone


def present(stamps: np.ndarray, now_us: float | np.ndarray) -> np.ndarray:
    """Rows that exist at `now`: stamped at or before it (NaN: no row)."""
    return np.asarray(stamps, dtype=float) <= now_us


def fresh(view: str, stamps: np.ndarray, now_us: float | np.ndarray) -> np.ndarray:
    """Rows whose values count at `now`: present and no older than the view's TTL."""
    stamps = np.asarray(stamps, dtype=float)
    return (stamps <= now_us) & (stamps >= np.asarray(now_us, dtype=float) - TTL_US[view])


def blank(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`values` with the rows not in `keep` missing (None in object arrays, NaN otherwise)."""
    if keep.all():
        return values
    out = values.copy() if values.dtype == object or values.dtype.kind == "f" else \
        values.astype(float)
    out[~keep] = None if out.dtype == object else np.nan
    return out


# ------------------------------------------------------------------ stored timestamps
def from_sqlite(values: Sequence) -> np.ndarray:
    """Feast's SQLite `event_ts` cells as epoch microseconds: Feast stores whole seconds (an
    integer; ISO text is read too), NaN for none."""
    try:  # Feast's integers (None: NaN), all at once
        return np.array(values, dtype=float).reshape(len(values)) * 1e6
    except (TypeError, ValueError):
        pass
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, int | float):
            out[i] = v * 1e6
        elif isinstance(v, str):
            out[i] = float(np.datetime64(v, "us").astype(np.int64))
    return out


_VARINT = 10
SMALL = 32


def from_proto(blobs: Sequence[bytes | None]) -> np.ndarray:
    """Serialized `google.protobuf.Timestamp` messages (Feast's Redis `_ts:<view>` fields) as
    epoch microseconds, decoded for all blobs at once; NaN for none."""
    n = len(blobs)
    out = np.full(n, np.nan)
    if not n:
        return out
    if n <= SMALL:  # a few: protobuf's own parser costs less than the vectorized setup
        from google.protobuf.timestamp_pb2 import Timestamp

        for i, blob in enumerate(blobs):
            if blob:
                ts = Timestamp.FromString(blob)
                out[i] = ts.seconds * 1_000_000 + ts.nanos // 1000
        return out
    blobs = [b or b"" for b in blobs]
    lens = np.fromiter(map(len, blobs), np.int64, n)
    buf = np.frombuffer(b"".join(blobs) + bytes(2 * _VARINT + 2), np.uint8)
    starts = np.cumsum(lens) - lens
    seconds, nanos = np.zeros(n, np.int64), np.zeros(n, np.int64)
    pos = starts.copy()
    done = lens == 0
    for _ in range(2):  # field 1 (seconds) then field 2 (nanos), each optional
        active = ~done & (pos < starts + lens)
        tag = np.where(active, buf[np.minimum(pos, len(buf) - 1)], 0)
        raw = buf[(pos + 1)[:, None] + np.arange(_VARINT)].astype(np.uint64)
        more = (raw & 0x80) != 0
        size = np.argmin(more, axis=1) + 1  # bytes up to the first without continuation bit
        keep = np.arange(_VARINT) < size[:, None]
        value = np.bitwise_or.reduce(np.where(keep, (raw & 0x7F) << (7 * np.arange(
            _VARINT)).astype(np.uint64), np.uint64(0)), axis=1).view(np.int64)
        is_s, is_n = active & (tag == 0x08), active & (tag == 0x10)
        seconds[is_s], nanos[is_n] = value[is_s], value[is_n]
        pos = np.where(is_s | is_n, pos + 1 + size, pos)
        done |= ~(is_s | is_n)
    ok = lens > 0
    out[ok] = (seconds[ok] * 1_000_000 + nanos[ok] // 1000).astype(float)
    return out
