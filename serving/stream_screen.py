"""Screen raw stream messages at the byte level before any JSON parser reads them, and name
what is wrong with a message that cannot be read as a tracking event.

Arrow's JSON reader is fast but not hardened: a document that is not an object (a lone `null`
first in its input crashes the process) must never reach it, and Python's `json.loads`
recurses once per nesting level, so a deeply nested document must never reach that. The
screen, vectorized over the whole micro-batch (numpy over the joined bytes), lets through
only messages that are no larger than the limit, valid UTF-8, start with `{` and end with `}`
(around whitespace or a UTF-8 byte-order mark), hold no raw line break (a pretty-printed
message is let through once `json.loads` has read it, its line breaks then being whitespace)
and are nested at most `MAX_DEPTH` levels. Everything else gets its reason here; the rare
messages Arrow still refuses are named by `why_broken`, which reads them only once their depth
is known to be bounded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# the tracking event's fields and their JSON types (docs/data-contract.md)
FIELDS = pa.schema([
    ("event_id", pa.string()), ("shipment_id", pa.string()), ("parcel_id", pa.string()),
    ("event_time", pa.string()), ("ingested_at", pa.string()), ("event_type", pa.string()),
    ("hub_id", pa.string()), ("leg_index", pa.int64()), ("latitude", pa.float64()),
    ("longitude", pa.float64()), ("note", pa.string()),
])
MAX_DEPTH = 32  # a tracking event is one flat object; anything this deep is not one
MAX_BYTES_DEFAULT = 65_536
_BOM = b"\xef\xbb\xbf"
_BLANK = b" \t\r\n"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: no backtracking
_OPEN, _CLOSE = np.frombuffer(b"{[", np.uint8), np.frombuffer(b"}]", np.uint8)
_HIGH = 0x80
_MAX_FLOAT = 1.7976931348623157e308
TOO_DEEP = f"nested too deep: more than {MAX_DEPTH} levels of arrays or objects"


@dataclass
class Screened:
    """The messages fit for Arrow (one line each, with their batch positions), the reason of
    every message refused ('' where none), and which messages hold a backslash (only those
    can hold an escaped control character)."""

    lines: list[bytes]
    at: np.ndarray
    reason: np.ndarray
    escaped: np.ndarray


def nesting_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in `raw`, without parsing it: brackets inside JSON
    strings are not counted (an unterminated string's are, which only overstates the depth)."""
    body = _STRING.sub(b"", raw)
    b = np.frombuffer(body, np.uint8)
    step = np.isin(b, _OPEN).astype(np.int64) - np.isin(b, _CLOSE)
    return int(np.cumsum(step).max()) if len(step) else 0


def _per_message(starts: np.ndarray, ends: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """How many bytes of each message [start, end) of the joined batch are in `mask` (rare
    bytes: their positions are binned, no pass over the batch beyond finding them)."""
    at = np.flatnonzero(mask)
    k = np.searchsorted(starts, at, side="right") - 1
    inside = at < ends[k]  # not the separator after the message
    return np.bincount(k[inside], minlength=len(starts))


def screen(values: list[bytes | None], keys: list[bytes | None],
           max_bytes: int = MAX_BYTES_DEFAULT) -> Screened:
    """Refuse what must not reach a JSON parser; return the rest as lines for Arrow."""
    n = len(values)
    reason = np.full(n, "", dtype=object)
    raw = values
    if values.count(None):
        null = np.fromiter((v is None for v in values), bool, n)
        reason[null] = "null message value (a Kafka tombstone, not a tracking event)"
        raw = [b"" if v is None else v for v in values]
    length = np.fromiter(map(len, raw), np.int64, n)
    size = length.copy()
    if keys.count(None) < n:
        size += np.fromiter((0 if k is None else len(k) for k in keys), np.int64, n)
    reason[(length == 0) & (reason == "")] = "empty message"
    for i in np.flatnonzero(size > max_bytes):
        reason[i] = f"message too large: {int(size[i])} bytes, the limit is {max_bytes}"

    # the batch joined into one array; per-message counts by prefix sums, no Python loop
    buf = np.frombuffer(b"\n".join(raw) + b"\n", np.uint8)
    starts = np.concatenate([[0], np.cumsum(length + 1)[:-1]]).astype(np.int64)
    ends = starts + length
    alive = reason == ""
    shaped = (buf[starts] == ord("{")) & (buf[np.maximum(ends - 1, 0)] == ord("}"))
    breaks = _per_message(starts, ends, (buf == ord("\n")) | (buf == ord("\r")))
    high = _per_message(starts, ends, buf >= _HIGH)
    opens = _per_message(starts, ends, (buf == ord("{")) | (buf == ord("[")))
    escaped = _per_message(starts, ends, buf == ord("\\")) > 0

    utf8 = np.flatnonzero(alive & (high > 0))
    if len(utf8):  # one decode for all non-ASCII messages; one by one only if it fails
        try:
            b"\n".join(raw[i] for i in utf8).decode("utf-8")
        except UnicodeDecodeError:
            for i in utf8:
                reason[i] = _not_utf8(raw[i])
    for i in np.flatnonzero(alive & (opens > MAX_DEPTH)):
        if not reason[i] and nesting_depth(raw[i]) > MAX_DEPTH:
            reason[i] = TOO_DEEP
    lines = list(raw)
    for i in np.flatnonzero(alive & (~shaped | (breaks > 0))):  # rare: one by one
        if reason[i]:
            continue
        body = raw[i].removeprefix(_BOM).strip(_BLANK)
        object_like = body.startswith(b"{") and body.endswith(b"}")
        if not object_like or breaks[i]:
            found = why_broken(raw[i], depth_checked=True)
            if found or not object_like:  # only an object ever reaches Arrow
                reason[i] = found or "not a JSON object"
                continue
        # json.loads read it: its line breaks are whitespace, which Arrow must not see
        lines[i] = body.replace(b"\n", b" ").replace(b"\r", b" ") if breaks[i] else body
    at = np.flatnonzero(reason == "")
    return Screened([lines[i] for i in at], at, reason, escaped)


def _not_utf8(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return (f"malformed JSON: not UTF-8 (byte 0x{raw[err.start]:02x} at position "
                f"{err.start})")
    return ""


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list) -> dict:
    """An object whose pairs name an event field twice is refused (Arrow refuses it too);
    other names may repeat, as Arrow ignores fields it does not know."""
    seen: dict = {}
    for name, value in pairs:
        if name in seen and name in FIELDS.names:
            raise _Duplicate(name)
        seen[name] = value
    return seen


_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
          bool: "a boolean", type(None): "null"}


def why_broken(raw: bytes, depth_checked: bool = False) -> str:
    """The reason `raw` is not a readable tracking event, '' if it is a JSON object whose
    fields have the contract's types (Arrow may then read it). Never raises."""
    if (bad := _not_utf8(raw)):
        return bad
    if not depth_checked and nesting_depth(raw) > MAX_DEPTH:
        return TOO_DEEP
    text = raw.decode("utf-8")
    try:
        obj = json.loads(text.removeprefix("\ufeff"),
                         object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        return f"duplicate field: {str(dup)[:60]!r}"
    except (ValueError, RecursionError) as err:  # JSONDecodeError, digit limits
        return f"malformed JSON: {str(err)[:200]}"
    if not isinstance(obj, dict):
        return f"not a JSON object: {_KINDS.get(type(obj), 'another value')}"
    wrong = []
    for field in FIELDS:
        name, kind, value = field.name, str(field.type), obj.get(field.name)
        if value is None:
            continue
        if kind == "string":
            if not isinstance(value, str):
                wrong.append(f"wrong type: {name} must be a string")
            elif _unpaired_surrogate(value):
                wrong.append(f"malformed JSON: {name} holds an unpaired UTF-16 surrogate escape")
        elif kind == "int64":
            if isinstance(value, bool) or not isinstance(value, int):
                wrong.append(f"wrong type: {name} must be an integer")
            elif not -2**63 <= value < 2**63:
                wrong.append(f"{name} outside 0..31")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            wrong.append(f"wrong type: {name} must be a number")
        elif not math.isfinite(value) if isinstance(value, float) else abs(value) > _MAX_FLOAT:
            wrong.append(f"{name} is not a finite number")
    return "; ".join(wrong)


def _unpaired_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
