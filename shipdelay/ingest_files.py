"""Read one delivered file into cells and row numbers, without losing a row to a traceback.

A CSV is split with the standard library's `csv` reader in strict mode, record by record, so
that every problem has a row: a row with more or fewer fields than the header, broken quoting
(`"ab"c`), an unterminated quote that runs to the end of the file (pyarrow's and pandas' C
readers either stop the whole file there or, when the swallowed rows happen to give the right
number of fields, quietly take them as one cell). Bytes that are not UTF-8 are kept as
surrogate escapes, so the row that holds them can be rejected and its raw bytes shown. A file
that cannot be read at all (empty, binary, JSON, compressed, corrupt Parquet) is refused in
one sentence that names it, before anything is written.

Row numbers count data records from 1 (the header and blank lines are not counted); a record
whose quoted cell holds a newline is still one row.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CSV_SUFFIXES, PARQUET_SUFFIXES = (".csv",), (".parquet", ".pq")
RAW_LIMIT = 20_000  # characters of a broken record kept in its reject (the rest is counted)

_MAGIC = ((b"PAR1", "a Parquet file: give it a .parquet name"),
          (b"\x1f\x8b", "compressed with gzip: decompress it first"),
          (b"PK\x03\x04", "a zip archive (a spreadsheet workbook?): export it as CSV"),
          (b"\x28\xb5\x2f\xfd", "compressed with zstd: decompress it first"))
_BINARY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\udc80-\udcff]")


class FileRefused(ValueError):
    """The file as a whole cannot be imported; the message is one sentence naming it."""


class UsageError(ValueError):
    """A bad argument (`param` names the option); the CLI exits 2."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@dataclass
class RawFile:
    """What could be read: `cells` holds one row per readable record, indexed by its row number
    - 1, in the header's columns (CSV: text or None for an empty cell; Parquet: typed values);
    `broken` lists records that could not be split into those columns (row, reason, raw)."""

    cells: pd.DataFrame
    broken: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        {"row": pd.Series([], dtype="int64"), "reason": [], "raw": []}))
    typed: bool = False  # Parquet: values keep their Arrow types
    unsupported: dict[str, str] = field(default_factory=dict)  # Parquet column -> its type


def read_file(path: Path) -> RawFile:
    """The cells of a .csv or .parquet file; FileRefused if it cannot be read at all."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return read_csv(path)
    if suffix in PARQUET_SUFFIXES:
        return read_parquet(path)
    raise UsageError("PATH", f"{path.name} is {f'a {suffix} file' if suffix else 'not named .csv'}"
                             f": shipdelay ingest reads .csv and .parquet files")


def read_csv(path: Path) -> RawFile:
    data = path.read_bytes()
    data = data.removeprefix(b"\xef\xbb\xbf")  # a byte order mark is not part of the header
    _refuse_non_csv(path.name, data)
    lines = io.StringIO(data.decode("utf-8", "surrogateescape"), newline="").readlines()
    # The standard library refuses cells over 128 KiB; an unterminated quote must run to the
    # end of the file to be recognised as one, however large the file is.
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**62)))
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    numbers, records, broken = [], [], []
    done = number = 0  # lines consumed before the current record; data records so far
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            if header is None:
                raise FileRefused(f"{path.name} cannot be read as CSV: its header line is "
                                  f"malformed ({err})") from None
            number += 1
            broken.append((number, _quoting_reason(err, done, reader.line_num, len(lines)),
                           _clip("".join(lines[done:reader.line_num]))))
            done = reader.line_num
            continue
        first, done = done + 1, reader.line_num
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # a blank line
        if header is None:
            header = _header(path.name, record)
            continue
        number += 1
        if len(record) == len(header):
            numbers.append(number)
            records.append(record)
        else:
            where = f"line {first}" if first == done else f"lines {first}-{done}"
            reason = f"row has {len(record)} fields, the header has {len(header)} ({where})"
            broken.append((number, reason, json.dumps(record, ensure_ascii=False)))
    if header is None:
        raise FileRefused(f"{path.name} is empty: it has no header line")
    cells = pd.DataFrame(records, columns=header, dtype=object,
                         index=pd.Index(numbers, dtype="int64") - 1)
    cells = cells.mask(cells.eq(""), None)  # an empty cell is missing
    out = RawFile(cells)
    if broken:
        out.broken = pd.DataFrame(broken, columns=["row", "reason", "raw"]).astype(
            {"row": "int64"})
        out.broken["row"] -= 1  # positions, like the cells' index
    return out


def read_parquet(path: Path) -> RawFile:
    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - any failure of the reader means an unreadable file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileRefused(f"{path.name} is not a readable Parquet file ({reason})") from None
    columns, unsupported = {}, {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        kind = column.type
        if pa.types.is_decimal(kind):
            column = column.cast(pa.float64())
        elif pa.types.is_timestamp(kind):
            # keep the file's unit: a far-future value must reach the horizon check, not
            # overflow pandas' nanoseconds here
            series = pd.Series(column.to_pandas(coerce_temporal_nanoseconds=False))
            columns[name] = (series.dt.tz_convert("UTC") if series.dt.tz is not None
                             else series.dt.tz_localize("UTC"))
            continue
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            columns[name] = pd.Series(column.to_pylist(), dtype=object).map(
                lambda b: b.decode("utf-8", "surrogateescape") if isinstance(b, bytes) else b)
            continue
        elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                  or pa.types.is_boolean(kind) or pa.types.is_string(kind)
                  or pa.types.is_large_string(kind) or pa.types.is_null(kind)
                  or pa.types.is_date(kind)):
            unsupported[str(name)] = str(kind)
            columns[name] = pd.Series(column.to_pylist(), dtype=object).map(
                lambda v: None if v is None else str(v))
            continue
        series = pd.Series(column.to_pandas(), dtype=None)
        if pa.types.is_date(kind):
            series = series.map(lambda d: None if d is None or d is pd.NaT else d.isoformat())
        columns[name] = series
    names = [str(n).strip() for n in table.column_names]
    if len(set(names)) < len(names):
        raise FileRefused(f"{path.name} repeats a column name: {_repeated(names)}")
    cells = pd.DataFrame(dict(zip(names, columns.values(), strict=True)),
                         index=pd.RangeIndex(table.num_rows))
    return RawFile(cells, typed=True, unsupported=unsupported)


def _refuse_non_csv(name: str, data: bytes) -> None:
    if not data.strip():
        raise FileRefused(f"{name} is empty")
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise FileRefused(f"{name} is not a CSV file: it is {what}")
    first = data.lstrip()[:1]
    if first in (b"{", b"["):
        raise FileRefused(f"{name} holds JSON, not CSV: convert it to CSV with a header row")
    head = data.lstrip(b"\r\n")
    head = head[:head.find(b"\n")] if b"\n" in head[:65536] else head[:65536]
    if _BINARY.search(head.decode("utf-8", "surrogateescape")):
        raise FileRefused(f"{name} is not a CSV text file: its first line holds binary data "
                          "(control characters or bytes that are not UTF-8)")


def _header(name: str, record: list[str]) -> list[str]:
    header = [cell.strip() for cell in record]
    if len(set(header)) < len(header):
        raise FileRefused(f"{name} repeats a column name in its header: {_repeated(header)}")
    return header


def _repeated(names: list[str]) -> str:
    seen, twice = set(), []
    for n in names:
        if n in seen and n not in twice:
            twice.append(n)
        seen.add(n)
    return ", ".join(repr(n) for n in twice)


def _quoting_reason(err: csv.Error, first: int, last: int, total: int) -> str:
    if "unexpected end of data" in str(err) and last >= total:
        return (f"unterminated quote: a quote opened in this row (line {first + 1}) is never "
                f"closed, so the rest of the file (lines {first + 1}-{total}) could not be "
                "read as rows")
    return f"malformed CSV quoting at line {last}: {err}"


def _clip(text: str) -> str:
    """A broken record's raw text as JSON, at most RAW_LIMIT characters of it."""
    if len(text) > RAW_LIMIT:
        text = text[:RAW_LIMIT] + f"... ({len(text) - RAW_LIMIT} more characters)"
    return json.dumps(text, ensure_ascii=False)  # undecodable bytes: shown as \xNN later
