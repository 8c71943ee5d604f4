"""Parse and validate a micro-batch of tracking-event messages: valid events out as one frame,
everything else as dead letters with the raw payload and the reason.

The whole batch is parsed by Arrow's JSON reader in one call. A batch holding broken messages
fails as a whole; it is then split in halves until each broken message stands alone (a few
Arrow calls per broken message), and only those are examined one by one to name the reason.
The rules are the data contract's for `tracking_events` (docs/data-contract.md); checks that
need the shipment's state (unknown, already delivered) are the stream's, not the parser's.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pj

from shipdelay.contract import EVENT_TYPES

FIELDS = pa.schema([
    ("event_id", pa.string()), ("shipment_id", pa.string()), ("parcel_id", pa.string()),
    ("event_time", pa.string()), ("ingested_at", pa.string()), ("event_type", pa.string()),
    ("hub_id", pa.string()), ("leg_index", pa.int64()), ("latitude", pa.float64()),
    ("longitude", pa.float64()), ("note", pa.string()),
])
REQUIRED = ["event_id", "shipment_id", "parcel_id", "event_time", "ingested_at", "event_type",
            "hub_id"]
FUTURE_TOLERANCE = pd.Timedelta(hours=1)  # clock skew tolerated before a time is "in the future"
META = ["partition", "offset", "produced_ms"]
DEAD_COLUMNS = ["partition", "offset", "key", "raw", "reason"]
_OPTIONS = pj.ParseOptions(explicit_schema=FIELDS, unexpected_field_behavior="ignore")


@dataclass
class Parsed:
    events: pd.DataFrame  # contract columns (times as UTC timestamps) + META
    dead: pd.DataFrame  # DEAD_COLUMNS


def _read(lines: list[bytes]) -> pa.Table | None:
    try:
        table = pj.read_json(io.BytesIO(b"\n".join(lines)), parse_options=_OPTIONS)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == len(lines) else None


def _split_read(lines: list[bytes], at: np.ndarray, good: list, bad: list) -> None:
    """Parse `lines`; on failure halve until the broken lines are isolated."""
    table = _read(lines)
    if table is not None:
        good.append((table, at))
    elif len(lines) == 1:
        bad.append(int(at[0]))
    else:
        mid = len(lines) // 2
        _split_read(lines[:mid], at[:mid], good, bad)
        _split_read(lines[mid:], at[mid:], good, bad)


def why_broken(raw: bytes) -> str:
    """The reason one message could not be read as a tracking event."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"malformed JSON: {err}"
    if not isinstance(obj, dict):
        return f"not a JSON object but {type(obj).__name__}"
    wrong = []
    for field in FIELDS:
        value = obj.get(field.name)
        if value is None:
            continue
        if pa.types.is_string(field.type) and not isinstance(value, str):
            wrong.append(f"{field.name} must be a string")
        elif pa.types.is_integer(field.type) and (isinstance(value, bool)
                                                   or not isinstance(value, int)):
            wrong.append(f"{field.name} must be an integer")
        elif pa.types.is_floating(field.type) and (isinstance(value, bool)
                                                    or not isinstance(value, int | float)):
            wrong.append(f"{field.name} must be a number")
    return "wrong type: " + "; ".join(wrong) if wrong else "unreadable event"


def _reasons(frame: pd.DataFrame, keys: pd.Series, now: pd.Timestamp) -> pd.Series:
    """The contract's checks, all vectorized; '' where a row passes."""
    rules: list[tuple[np.ndarray, str]] = []

    def rule(mask, text) -> None:
        rules.append((np.asarray(pd.Series(mask).fillna(False), bool), text))

    for col in REQUIRED:
        rule(frame[col].isna() | (frame[col].astype("string").str.len() == 0),
             f"missing field {col}")
    rule(frame["event_id"].str.len() > 128, "event_id longer than 128 characters")
    rule(frame["event_type"].notna() & ~frame["event_type"].isin(EVENT_TYPES),
         "unknown event_type")
    times = {}
    for col in ("event_time", "ingested_at"):
        times[col] = pd.to_datetime(frame[col], utc=True, errors="coerce", format="ISO8601")
        rule(frame[col].notna() & times[col].isna(), f"{col} is not an ISO-8601 time")
    rule(times["event_time"] > times["ingested_at"] + FUTURE_TOLERANCE,
         "event_time in the future: after ingested_at")
    rule(times["ingested_at"] > now + FUTURE_TOLERANCE, "ingested_at in the future")
    rule((frame["leg_index"] < 0) | (frame["leg_index"] > 31), "leg_index outside 0..31")
    rule(frame["latitude"].abs() > 90, "latitude outside -90..90")
    rule(frame["longitude"].abs() > 180, "longitude outside -180..180")
    rule(keys.notna() & frame["shipment_id"].notna()
         & (keys.astype(object) != frame["shipment_id"].astype(object)),
         "message key is not the shipment_id")
    out = np.full(len(frame), "", dtype=object)
    any_bad = np.logical_or.reduce([m for m, _ in rules]) if rules else np.zeros(len(frame), bool)
    for i in np.flatnonzero(any_bad):  # bad rows only: name every problem
        out[i] = "; ".join(text for m, text in rules if m[i])
    frame["event_time"], frame["ingested_at"] = times["event_time"], times["ingested_at"]
    return pd.Series(out, index=frame.index)


def parse_batch(values: list[bytes | None], keys: list[bytes | None], meta: pd.DataFrame,
                now: pd.Timestamp | None = None) -> Parsed:
    """Split raw messages into valid events and dead letters. `meta` has META columns, one row
    per message in the same order."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    n = len(values)
    raw = [v if v is not None else b"" for v in values]
    empty = np.fromiter((len(v) == 0 for v in raw), bool, n)
    lines = [v.replace(b"\n", b" ").replace(b"\r", b" ") if b"\n" in v or b"\r" in v else v
             for v in raw]
    good: list = []
    bad: list[int] = []
    at = np.flatnonzero(~empty)
    if len(at):
        _split_read([lines[i] for i in at], at, good, bad)
    reason = np.full(n, "", dtype=object)
    reason[empty] = "empty message"
    for i in bad:
        reason[i] = why_broken(raw[i])

    if good:
        frame = pa.concat_tables([t for t, _ in good]).to_pandas(types_mapper=pd.ArrowDtype)
        rows = np.concatenate([a for _, a in good])
        frame = frame.astype({c: "string" for c in frame.columns
                              if pa.types.is_string(FIELDS.field(c).type)})
        frame = frame.astype({"leg_index": "Int64", "latitude": "float64",
                              "longitude": "float64"})
        key_text = pd.Series([None if keys[i] is None else keys[i].decode("utf-8", "replace")
                              for i in rows], dtype=object)
        found = _reasons(frame, key_text, now).to_numpy()
        reason[rows] = found
        ok = found == ""
        events = frame[ok].reset_index(drop=True)
        picked = meta.iloc[rows[ok]].reset_index(drop=True)
        events = pd.concat([events, picked[META]], axis=1)
    else:
        events = pd.DataFrame({f.name: pd.Series(dtype="string") for f in FIELDS})
        events = events.assign(event_time=pd.Series(dtype="datetime64[ns, UTC]"),
                               ingested_at=pd.Series(dtype="datetime64[ns, UTC]"),
                               **{c: pd.Series(dtype="int64") for c in META})
    dead_at = np.flatnonzero(reason != "")
    dead = pd.DataFrame({"partition": meta["partition"].to_numpy()[dead_at],
                         "offset": meta["offset"].to_numpy()[dead_at],
                         "key": [keys[i] for i in dead_at],
                         "raw": [raw[i] for i in dead_at],
                         "reason": reason[dead_at]}, columns=DEAD_COLUMNS)
    return Parsed(events, dead)


def dead_letter_records(dead: pd.DataFrame, source_topic: str, at: pd.Timestamp) -> list[bytes]:
    """One JSON document per dead letter: the reason, where the message was (topic, partition,
    offset: a consumer of this topic can de-duplicate by them after a reprocess), the key and
    the exact payload (base64) plus its text for people."""
    out = []
    for row in dead.itertuples(index=False):  # bad input only: not the hot path
        raw = row.raw if isinstance(row.raw, bytes) else b""
        out.append(json.dumps({
            "reason": row.reason, "topic": source_topic, "partition": int(row.partition),
            "offset": int(row.offset),
            "key": None if row.key is None else row.key.decode("utf-8", "replace"),
            "payload_b64": base64.b64encode(raw).decode(),
            "payload": raw.decode("utf-8", "replace"), "dead_lettered_at": at.isoformat(),
        }).encode())
    return out
