"""Parse and validate a micro-batch of tracking-event messages: valid events out as one frame,
everything else as dead letters with the raw payload and the reason.

Whatever its bytes, every message ends as exactly one of the two. First the byte-level screen
(`serving.stream_screen`) refuses what must never reach a JSON parser (null values, oversized,
not UTF-8, not an object, nested too deep). The rest is parsed by Arrow's JSON reader in one
call per batch. A batch holding messages Arrow refuses fails as a whole; it is then split in
halves until each refused message stands alone (a few Arrow calls per such message), and only
those are examined one by one to name the reason. The rules are the data contract's for
`tracking_events` (docs/data-contract.md); checks that need the lake or the shipment's state
(unknown shipment or hub, already delivered) are the stream's, not the parser's.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from serving.stream_screen import FIELDS, MAX_BYTES_DEFAULT, screen, why_broken
from shipdelay.contract import EVENT_TYPES

REQUIRED = ["event_id", "shipment_id", "parcel_id", "event_time", "ingested_at", "event_type",
            "hub_id"]
FUTURE_TOLERANCE = pd.Timedelta(hours=1)  # clock skew tolerated before a time is "in the future"
META = ["partition", "offset", "produced_ms"]
DEAD_COLUMNS = ["partition", "offset", "key", "raw", "reason"]
COORDINATES = {"latitude": 90, "longitude": 180}
_OPTIONS = pj.ParseOptions(explicit_schema=FIELDS, unexpected_field_behavior="ignore")
# the contract's time texts: a date (2024-03-01 or 20240301), optionally a time of day to the
# hour, minute, second or fraction, optionally then Z or an offset (+02, +0200, +02:00)
_DATE, _ZONE = r"(?:\d{4}-\d{2}-\d{2}|\d{8})", r"(?:Z|[+-]\d{2}(?::?\d{2})?)"
_CLOCK = r"[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,9})?)?)?"
ISO_TIME = f"^{_DATE}(?:{_CLOCK}{_ZONE}?)?$"
ISO_ZONED = f"^{_DATE}{_CLOCK}{_ZONE}$"
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")  # earlier times are typos or placeholders
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # in no text field (tab, line breaks may be)


@dataclass
class Parsed:
    events: pd.DataFrame  # contract columns (times as UTC timestamps) + META
    dead: pd.DataFrame  # DEAD_COLUMNS


def _read(lines: list[bytes], options: pj.ReadOptions) -> pa.Table | None:
    try:
        table = pj.read_json(io.BytesIO(b"\n".join(lines)), read_options=options,
                             parse_options=_OPTIONS)
    except pa.ArrowException:  # any refusal: the halving isolates the line(s) at fault
        return None
    return table if table.num_rows == len(lines) else None


def _split_read(lines: list[bytes], at: np.ndarray, options: pj.ReadOptions, good: list,
                bad: list) -> None:
    """Parse `lines`; on failure halve until the refused lines are isolated."""
    table = _read(lines, options)
    if table is not None:
        good.append((table, at))
    elif len(lines) == 1:
        bad.append(int(at[0]))
    else:
        mid = len(lines) // 2
        _split_read(lines[:mid], at[:mid], options, good, bad)
        _split_read(lines[mid:], at[mid:], options, good, bad)


def utc_times(values: pa.Array | pa.ChunkedArray | pd.Series) -> pd.Series:
    """ISO-8601 text -> UTC instants at microseconds (NaT where not a time), the instants ingest
    stores for the same text: surrounding blanks ignored, only the contract's forms (ISO_TIME),
    naive values taken as UTC. Arrow's parser reads each kind (with and without an offset)
    in one call; a kind holding a form it does not read (20240301T100000, an impossible date)
    falls back to pandas, where the kinds are parsed apart too: parsed together, pandas gives
    a naive value the offset of a value before it."""
    if isinstance(values, pd.Series):
        values = pa.array(values.astype(object).where(values.notna(), None), pa.string())
    text = pc.utf8_trim_whitespace(values)
    zoned = pc.match_substring_regex(text, ISO_ZONED).fill_null(False)
    naive = pc.and_(pc.match_substring_regex(text, ISO_TIME).fill_null(False),
                    pc.invert(zoned))
    ns = np.full(len(text), np.iinfo(np.int64).min, np.int64)  # NaT
    for mask, with_zone in ((zoned, True), (naive, False)):
        at = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), bool))
        if len(at):
            ns[at] = _instants(pc.take(text, pa.array(at)), with_zone)
    # floored to microseconds on the integers: pandas' floor of zoned times localizes them
    # again (~tens of ms per micro-batch)
    nat = ns == np.iinfo(np.int64).min
    ns = np.where(nat, ns, ns // 1000 * 1000)
    return pd.Series(ns.view("datetime64[ns]")).dt.tz_localize("UTC")


def _instants(text: pa.Array | pa.ChunkedArray, with_zone: bool) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) of texts all of one kind."""
    try:
        ts = pc.cast(text, pa.timestamp("ns", tz="UTC" if with_zone else None))
        return np.asarray(ts.to_numpy(zero_copy_only=False)).astype("datetime64[ns]").view(
            np.int64)
    except pa.ArrowException:  # a form Arrow does not read, or out of its range
        series = pd.Series(text.to_pylist(), dtype=object)
        parsed = (pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")
                  if with_zone else _naive_as_utc(series))
        return parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().view(np.int64)


def _naive_as_utc(text: pd.Series) -> pd.Series:
    """Times without an offset, as UTC. Should pandas find an offset among them anyway, it
    would give the values after it that offset: then each value is parsed alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        if str(parsed.dtype) == "datetime64[ns]":
            return parsed.dt.tz_localize("UTC")
    except (ValueError, TypeError, OverflowError):
        pass
    one = [pd.to_datetime(t, utc=True, format="ISO8601", errors="coerce") for t in text]
    return pd.Series(one, index=text.index, dtype="datetime64[ns, UTC]")


def _flags(table: pa.Table, escaped: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """Checks made on the Arrow table itself, where a JSON NaN still differs from a null:
    coordinates that are NaN or infinite, and text holding a control character (refused as
    ingest refuses it: a NUL cuts a value short in most readers). Only a message holding a
    backslash can hold one (JSON has no other way to write it), so only those are searched."""
    out = []
    for name in COORDINATES:
        col = table.column(name)
        bad = pc.and_(pc.is_valid(col), pc.invert(pc.is_finite(col))).fill_null(False)
        out.append((np.asarray(bad.to_numpy(zero_copy_only=False), bool),
                    f"{name} is not a finite number"))
    if escaped.any():
        at = np.flatnonzero(escaped)
        some = table.take(pa.array(at))
        for f in FIELDS:
            if pa.types.is_string(f.type):
                hit = pc.match_substring_regex(some.column(f.name), CONTROL).fill_null(False)
                mask = np.zeros(len(escaped), bool)
                mask[at] = np.asarray(hit.to_numpy(zero_copy_only=False), bool)
                out.append((mask, f"{f.name} holds a control character"))
    return out


def _key_differs(keys: list[bytes | None], rows: np.ndarray, shipment: pa.ChunkedArray
                 ) -> np.ndarray:
    """Per parsed row: its message has a key and a shipment_id, and the key is not the
    shipment_id's UTF-8 bytes. Compared as bytes in Arrow, so no key is decoded one by one
    (and a key that is not UTF-8 never equals any shipment_id)."""
    key = pa.array(keys, pa.binary()).take(pa.array(rows, pa.int64()))
    sid = pc.cast(shipment, pa.binary())
    differs = pc.and_(pc.and_(pc.is_valid(key), pc.is_valid(sid)), pc.not_equal(key, sid))
    return np.asarray(differs.fill_null(False).to_numpy(zero_copy_only=False), bool)


def _reasons(frame: pd.DataFrame, key_differs: np.ndarray, now: pd.Timestamp, times: dict,
             flags: list[tuple[np.ndarray, str]]) -> pd.Series:
    """The contract's checks, all vectorized; '' where a row passes. `times`: the parsed
    event_time and ingested_at; `key_differs`: rows whose message key is not their
    shipment_id."""
    rules: list[tuple[np.ndarray, str]] = list(flags)

    def rule(mask, text) -> None:
        rules.append((np.asarray(pd.Series(mask).fillna(False), bool), text))

    for col in REQUIRED:
        rule(frame[col].isna() | (frame[col].astype("string").str.len() == 0),
             f"missing field {col}")
    rule(frame["event_id"].str.len() > 128, "event_id longer than 128 characters")
    rule(frame["event_type"].notna() & ~frame["event_type"].isin(EVENT_TYPES),
         "unknown event_type")
    for col in ("event_time", "ingested_at"):
        rule(frame[col].notna() & times[col].isna(), f"{col} is not an ISO-8601 time")
        rule(times[col] < EPOCH, f"{col} before 1970")
    rule(times["event_time"] > times["ingested_at"] + FUTURE_TOLERANCE,
         "event_time in the future: after ingested_at")
    rule(times["ingested_at"] > now + FUTURE_TOLERANCE, "ingested_at in the future")
    rule((frame["leg_index"] < 0) | (frame["leg_index"] > 31), "leg_index outside 0..31")
    for col, limit in COORDINATES.items():
        rule(np.isfinite(frame[col]) & (frame[col].abs() > limit), f"{col} outside "
             f"-{limit}..{limit}")
    rule(key_differs, "message key is not the shipment_id")
    out = np.full(len(frame), "", dtype=object)
    any_bad = np.logical_or.reduce([m for m, _ in rules])
    for i in np.flatnonzero(any_bad):  # bad rows only: name every problem
        out[i] = "; ".join(text for m, text in rules if m[i])
    frame["event_time"], frame["ingested_at"] = times["event_time"], times["ingested_at"]
    return pd.Series(out, index=frame.index)


def _empty_events() -> pd.DataFrame:
    events = pd.DataFrame({f.name: pd.Series(dtype="string") for f in FIELDS})
    return events.assign(event_time=pd.Series(dtype="datetime64[ns, UTC]"),
                         ingested_at=pd.Series(dtype="datetime64[ns, UTC]"),
                         leg_index=pd.Series(dtype="Int64"),
                         latitude=pd.Series(dtype="float64"),
                         longitude=pd.Series(dtype="float64"),
                         **{c: pd.Series(dtype="int64") for c in META})


def parse_batch(values: list[bytes | None], keys: list[bytes | None], meta: pd.DataFrame,
                now: pd.Timestamp | None = None, max_bytes: int = MAX_BYTES_DEFAULT) -> Parsed:
    """Split raw messages into valid events and dead letters. `meta` has META columns, one row
    per message in the same order. Every message ends in exactly one of the two."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    values, keys = list(values), list(keys)
    screened = screen(values, keys, max_bytes)
    reason = screened.reason
    good: list = []
    bad: list[int] = []
    if len(screened.at):
        # an object larger than Arrow's block fails: blocks hold the largest message allowed
        options = pj.ReadOptions(block_size=max(1 << 20, 2 * max_bytes + 2))
        _split_read(screened.lines, screened.at, options, good, bad)
    for i in bad:
        reason[i] = why_broken(values[i], depth_checked=True) or \
            "unreadable event: Arrow's JSON reader refused it"

    events = None
    if good:
        table = pa.concat_tables([t for t, _ in good])
        rows = np.concatenate([a for _, a in good])
        flags = _flags(table, screened.escaped[rows])
        times = {c: utc_times(table.column(c)) for c in ("event_time", "ingested_at")}
        frame = table.to_pandas(types_mapper=pd.ArrowDtype)
        frame = frame.astype({c: "string" for c in frame.columns
                              if pa.types.is_string(FIELDS.field(c).type)})
        frame = frame.astype({"leg_index": "Int64", "latitude": "float64",
                              "longitude": "float64"})
        differs = _key_differs(keys, rows, table.column("shipment_id"))
        found = _reasons(frame, differs, now, times, flags).to_numpy()
        reason[rows] = found
        ok = found == ""
        picked = meta.iloc[rows[ok]].reset_index(drop=True)
        events = pd.concat([frame[ok].reset_index(drop=True), picked[META]], axis=1)
    if events is None:  # built only when needed: an empty frame of typed columns costs ~7 ms
        events = _empty_events()
    dead_at = np.flatnonzero(reason != "")
    dead = pd.DataFrame({"partition": meta["partition"].to_numpy()[dead_at],
                         "offset": meta["offset"].to_numpy()[dead_at],
                         "key": pd.Series([keys[i] for i in dead_at], dtype=object),
                         "raw": pd.Series([values[i] for i in dead_at], dtype=object),
                         "reason": reason[dead_at]}, columns=DEAD_COLUMNS)
    return Parsed(events, dead)


def dead_letter_records(dead: pd.DataFrame, source_topic: str, at: pd.Timestamp,
                        max_bytes: int = MAX_BYTES_DEFAULT) -> tuple[list[bytes], list]:
    """One JSON document per dead letter, and its Kafka key (the message's own key). Each holds
    the reason, where the message was (topic, partition, offset: a consumer of this topic can
    de-duplicate by them after a reprocess), the key and the exact payload (base64, null for a
    Kafka null value) plus its text for people. A message over `max_bytes` is kept in its
    source topic at that offset; its dead letter carries its first `max_bytes` bytes, its size
    and SHA-256 (the whole of it could exceed what the brokers accept)."""
    out, out_keys = [], []
    for row in dead.itertuples(index=False):  # bad input only: not the hot path
        raw = row.raw if isinstance(row.raw, bytes) else None
        key = row.key if isinstance(row.key, bytes) else None
        record = {"reason": row.reason, "topic": source_topic, "partition": int(row.partition),
                  "offset": int(row.offset)}
        cut = raw is not None and len(raw) > max_bytes
        cut_key = key is not None and len(key) > max_bytes
        key = key[:max_bytes] if cut_key else key
        shown = raw[:max_bytes] if cut else raw
        record |= {
            "key": None if key is None else key.decode("utf-8", "replace"),
            "payload_b64": None if shown is None else base64.b64encode(shown).decode(),
            "payload": None if shown is None else shown.decode("utf-8", "replace"),
            "payload_bytes": None if raw is None else len(raw),
            "dead_lettered_at": at.isoformat()}
        if cut or cut_key:
            record |= {"truncated": True,
                       "payload_sha256": hashlib.sha256(raw or b"").hexdigest()}
        out.append(json.dumps(record).encode())
        out_keys.append(key)
    return out, out_keys
