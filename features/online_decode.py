"""Bulk decoding of serialized Feast values (`feast.types.Value` protobuf messages).

Feast's online read parses every value into a message, then into a Python object, one at a time
(~5-14 us each on this machine: ~1 ms per shipment of ~90 features). The scalar kinds a feature
vector holds have a fixed wire form, so they are decoded here for a whole batch at once with
numpy:

| kind | bytes | value |
| --- | --- | --- |
| missing | empty (a field never written, or a null) | NaN / None |
| double_val (field 5) | 0x29 + 8 bytes little-endian | float |
| int64_val / int32_val (fields 4 / 3) | 0x20 / 0x18 + varint (two's complement) | float (exact below 2^53) |
| string_val (field 2), under 128 bytes | 0x12 + 1-byte length + UTF-8 | str |

Anything else (another kind, a long string, a malformed varint, an integer too large for a
float, a value of another kind than its feature's) is converted by Feast's own
`feast_value_type_to_python_type`, so no value is ever guessed.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

DOUBLE_TAG, INT64_TAG, INT32_TAG, STRING_TAG = 0x29, 0x20, 0x18, 0x12
_VARINT_MAX = 10
_EXACT_INT = 2**53
_UINT64 = 2**64 - 1
_DOUBLE = struct.Struct("<d")
_SHIFTS = (7 * np.arange(_VARINT_MAX)).astype(np.uint64)
_COLS = np.arange(_VARINT_MAX)


class DirectReadUnsupported(RuntimeError):
    """The direct online reader cannot reproduce Feast's read for this store or service."""


def kind_of(dtype) -> str:
    """'num' or 'str' for a Feast feature type the reader decodes."""
    name = str(dtype)
    if name in ("Float64", "Float32", "Int64", "Int32"):
        return "num"
    if name == "String":
        return "str"
    raise DirectReadUnsupported(f"feature type {name}")


def feast_value(blob: bytes):
    """Feast's own conversion of one serialized value (the reference and the fallback)."""
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    value = Value()
    value.ParseFromString(blob)
    return feast_value_type_to_python_type(value)


def decode(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode serialized values (b"" = missing).

    Returns (numbers, texts, other): numbers as float64 (NaN where not a number), texts as an
    object array (None where not a string), and the positions this function leaves to
    `feast_value`. A few values (one shipment's row) are decoded one by one in Python, the same
    rules without the ~30 numpy calls whose fixed cost a handful of values does not repay."""
    return _decode_few(blobs) if len(blobs) <= FEW else _decode_many(blobs)


FEW = 64  # up to this many values, `decode` works value by value


def _decode_few(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`decode`, value by value."""
    n = len(blobs)
    num = [math.nan] * n
    txt: list = [None] * n
    other = []
    for i, blob in enumerate(blobs):
        size = len(blob)
        if not size:
            continue
        tag = blob[0]
        if tag == DOUBLE_TAG and size == 9:
            num[i] = _DOUBLE.unpack_from(blob, 1)[0]
        elif tag in (INT64_TAG, INT32_TAG) and 2 <= size <= _VARINT_MAX + 1 and \
                all(b & 0x80 for b in blob[1:-1]) and not blob[-1] & 0x80:
            value = 0
            for k, b in enumerate(blob[1:]):
                value |= (b & 0x7F) << (7 * k)
            value &= _UINT64
            value = value - 2**64 if value >= 2**63 else value
            if -_EXACT_INT < value < _EXACT_INT:
                num[i] = float(value)
            else:
                other.append(i)
        elif tag == STRING_TAG and size >= 2 and blob[1] == size - 2:
            txt[i] = blob[2:].decode("utf-8")
        else:
            other.append(i)
    return (np.array(num, dtype=float), np.array(txt, dtype=object).reshape(n),
            np.array(other, dtype=np.int64))


def _decode_many(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`decode` for many values at once, with numpy."""
    n = len(blobs)
    num = np.full(n, np.nan)
    txt = np.full(n, None, dtype=object)
    if n == 0:
        return num, txt, np.zeros(0, np.int64)
    lens = np.fromiter(map(len, blobs), np.int64, n)
    buf = np.frombuffer(b"".join(blobs) + bytes(_VARINT_MAX + 2), np.uint8)
    starts = np.cumsum(lens) - lens
    tag = np.where(lens > 0, buf[starts], 0)
    handled = lens == 0

    dbl = np.flatnonzero((tag == DOUBLE_TAG) & (lens == 9))
    if len(dbl):
        raw = np.ascontiguousarray(buf[starts[dbl, None] + 1 + np.arange(8)])
        num[dbl] = raw.view("<f8").ravel()
        handled[dbl] = True

    ints = np.flatnonzero(((tag == INT64_TAG) | (tag == INT32_TAG)) & (lens >= 2)
                          & (lens <= _VARINT_MAX + 1))
    if len(ints):
        raw = buf[starts[ints, None] + 1 + _COLS].astype(np.uint64)
        size = lens[ints] - 1
        more = (raw & 0x80) != 0  # continuation bit: set on every byte but the last
        well_formed = (np.all(more | (_COLS >= (size - 1)[:, None]), axis=1)
                       & ~more[np.arange(len(ints)), size - 1])
        bits = np.where(_COLS < size[:, None], (raw & 0x7F) << _SHIFTS, np.uint64(0))
        value = np.bitwise_or.reduce(bits, axis=1).view(np.int64)
        ok = well_formed & (value < _EXACT_INT) & (value > -_EXACT_INT)  # no abs: -2**63
        num[ints[ok]] = value[ok].astype(np.float64)
        handled[ints[ok]] = True

    strs = np.flatnonzero((tag == STRING_TAG) & (lens >= 2))
    if len(strs):
        strs = strs[buf[starts[strs] + 1] == lens[strs] - 2]  # 1-byte length, all there
        if len(strs):
            txt[strs] = [blobs[i][2:].decode("utf-8") for i in strs.tolist()]
            handled[strs] = True
    return num, txt, np.flatnonzero(~handled)


def decode_cells(blobs: Sequence[bytes], at: np.ndarray, text: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, dict[int, object]]:
    """Decode values into the cells of a flat grid: `blobs[k]` belongs in cell `at[k]`;
    `text[c]` says whether cell c holds a string feature. Cells without a value are missing.

    Returns (numbers, texts, exceptions): float64 and object arrays over the cells, and
    {cell: Feast's value} for the values `decode` leaves to Feast and for values of another
    kind than their cell's."""
    size = len(text)
    num = np.full(size, np.nan)
    txt = np.full(size, None, dtype=object)
    n_num, n_txt, other = decode(blobs)
    num[at] = n_num
    txt[at] = n_txt
    wrong = np.where(text[at], ~np.isnan(n_num), np.not_equal(n_txt, None))
    odd = np.union1d(other, np.flatnonzero(wrong))
    return num, txt, {int(at[k]): feast_value(blobs[k]) for k in odd.tolist()}


def columns(num: np.ndarray, txt: np.ndarray, exceptions: dict[int, object], start: int,
            rows: int, kinds: Sequence[str]) -> list[np.ndarray]:
    """One array per feature of a (rows x features) block of cells starting at `start`:
    float64 for 'num' features, object for 'str' ones; a feature holding one of Feast's
    exceptional values becomes an object column (or stays float if the value is a number)."""
    width = len(kinds)
    stop = start + rows * width
    block_num = num[start:stop].reshape(rows, width)
    block_txt = txt[start:stop].reshape(rows, width)
    out = [block_txt[:, j].copy() if kind == "str" else block_num[:, j].copy()
           for j, kind in enumerate(kinds)]
    for cell, value in exceptions.items():
        if not start <= cell < stop:
            continue
        r, j = divmod(cell - start, width)
        column = out[j]
        exact_number = value is None or isinstance(value, float) or (
            isinstance(value, int) and not isinstance(value, bool) and abs(value) < _EXACT_INT)
        if column.dtype != object and exact_number:
            column[r] = np.nan if value is None else float(value)
        else:
            if column.dtype != object:
                out[j] = column = column.astype(object)
            column[r] = value
    return out
