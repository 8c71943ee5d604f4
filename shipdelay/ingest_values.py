"""Cells of a delivered file -> the contract's dtypes, with a reason for every cell that fails.

Vectorized, column by column, so one bad value rejects one row, never the file:
- text: a cell holding bytes that are not UTF-8, a NUL byte or another control character
  (anything below U+0020 but tab, line feed and carriage return, and U+007F) is refused (a NUL
  would cut the value short in most readers downstream); then text is stripped and an empty
  cell is missing;
- numbers: ASCII decimal notation only (`12`, `-0.5`, `1e3`); `inf` and `nan` are not finite
  and refused; integers must be whole and within +-2**53, beyond which a float cannot hold
  every integer, so `1e30` or 20 digits is refused rather than rounded or overflowed;
- times: ISO-8601 (`2024-03-01T10:00:00Z`, `...+02:00`, `2024-03-01 10:00`, `20240301T100000`);
  naive values are UTC. Values with and without an offset are parsed apart: parsed together,
  pandas gives a naive value the offset of a row before it. A time before 1970 or after the
  import's clock plus `contract.FUTURE_ALLOWANCE` is refused: a year-2200 scan is a typo or a
  placeholder, not a forecast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa

from shipdelay import contract

_TRUE, _FALSE = {"true", "t", "yes", "y", "1"}, {"false", "f", "no", "n", "0"}
MAX_INT = 2**53
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")

_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_NON_FINITE = r"^[+-]?(?:inf|infinity|nan)$"
_TIME = (r"^(?:\d{4}-\d{2}-\d{2}|\d{8})"
         r"(?:[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$")
_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_UNDECODED = "[\udc80-\udcff]"
_CONTROL = "[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]"


def problems_frame(rows: object, reasons: object, column: str | None = None) -> pd.DataFrame:
    """Problems found: the row's position in the file, the column at fault (if one), why."""
    rows = np.asarray(rows, dtype="int64")
    return pd.DataFrame({"row": rows, "column": pd.Series([column] * len(rows), dtype=object),
                         "reason": np.broadcast_to(np.asarray(reasons, dtype=object), rows.shape)})


def show(value: object, limit: int = 60) -> str:
    """A value for a message: strings quoted (escapes visible), numbers plain, long ones cut."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def text_problems(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Cells of `columns` holding undecodable bytes, NUL or control characters."""
    found = [problems_frame([], [])]
    for name in columns:
        values = frame[name]
        if values.dtype != object:
            continue
        text = values.where(values.map(type).eq(str))
        for pattern, describe in ((_UNDECODED, _undecoded), ("\x00", lambda _: "contains a "
                                  "NUL byte"), (_CONTROL, _control)):
            hit = text.str.contains(pattern, regex=True, na=False)
            if hit.any():
                reasons = text[hit].map(describe).radd(f"{name}: ")
                found.append(problems_frame(text.index[hit], reasons.to_numpy(), name))
                text = text.mask(hit)
    return pd.concat(found, ignore_index=True)


def _undecoded(text: str) -> str:
    byte = next(ord(c) - 0xDC00 for c in text if "\udc80" <= c <= "\udcff")
    return f"not valid UTF-8 (byte 0x{byte:02x})"


def _control(text: str) -> str:
    char = next(c for c in text if c < " " and c not in "\t\n\r" or c == "\x7f")
    return f"contains control character U+{ord(char):04X}"


def coerce(frame: pd.DataFrame, schema: pa.DataFrameSchema, clock: pd.Timestamp
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each column to its contract dtype; a value present that does not convert, or a time
    outside the horizon, is a problem (and left missing)."""
    out, problems = {}, [problems_frame([], [])]
    for name, column in schema.columns.items():
        values, dtype = frame[name], str(column.dtype)
        if dtype.startswith("datetime64"):
            parsed, reasons = _times(values, name, clock)
        elif dtype == "bool":
            parsed, reasons = _booleans(values)
        elif dtype in ("float64", "int64", "Int64"):
            parsed, reasons = _numbers(values, integer=dtype != "float64")
        else:
            parsed = values.astype(contract.STR)
            reasons = pd.Series("not text", index=values.index, dtype=object)
        failed = values.notna() & parsed.isna()
        if failed.any():
            labels = reasons[failed] + ": " + values[failed].map(show)
            problems.append(problems_frame(values.index[failed], labels.radd(f"{name}: "),
                                           name))
        out[name] = parsed
    return pd.DataFrame(out, index=frame.index), pd.concat(problems, ignore_index=True)


def _booleans(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    text = values.astype(str).str.lower()
    parsed = pd.Series(pd.NA, index=values.index, dtype="boolean")
    parsed[text.isin(_TRUE)], parsed[text.isin(_FALSE)] = True, False
    return parsed, pd.Series("not a boolean", index=values.index, dtype=object)


def _numbers(values: pd.Series, integer: bool) -> tuple[pd.Series, pd.Series]:
    reasons = pd.Series("not a number", index=values.index, dtype=object)
    if pd.api.types.is_bool_dtype(values.dtype):
        parsed = pd.Series(float("nan"), index=values.index)
    elif pd.api.types.is_numeric_dtype(values.dtype):
        parsed = values.astype("float64")
    else:
        text = values.where(values.map(type).eq(str)).astype(object)
        number = text.str.match(_NUMBER, na=False)
        parsed = pd.Series(float("nan"), index=values.index)
        if number.any():  # float() is exact; to_numeric can be one ulp off, breaking round trips
            parsed[number] = text[number].astype("float64")
        reasons[text.str.match(_NON_FINITE, case=False, na=False)] = "not a finite number"
    infinite = parsed.abs().eq(float("inf"))
    reasons[infinite] = "not a finite number"
    parsed = parsed.mask(infinite)
    if integer:
        whole = parsed.isna() | (parsed % 1 == 0)
        reasons[~whole] = "not an integer"
        in_range = parsed.isna() | (parsed.abs() < MAX_INT)
        reasons[whole & ~in_range] = "integer out of range (beyond +-2**53)"
        parsed = parsed.where(whole & in_range).astype("Int64")
    return parsed, reasons


def _times(values: pd.Series, name: str, clock: pd.Timestamp) -> tuple[pd.Series, pd.Series]:
    """ISO-8601 text or datetimes -> UTC within [1970, clock + allowance]."""
    reasons = pd.Series("not an ISO-8601 timestamp", index=values.index, dtype=object)
    latest = clock + contract.FUTURE_ALLOWANCE.get(name, contract.FUTURE_DEFAULT)
    future = (f"too far in the future (more than {_days(latest - clock)} after the import's "
              f"clock {clock:%Y-%m-%dT%H:%MZ})")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        times = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        times = times.dt.tz_convert("UTC")
    else:
        text = values.where(values.map(type).eq(str)).astype(object)
        ok = text.str.match(_TIME, na=False)
        year = pd.to_numeric(text.where(ok).str.slice(0, 4), errors="coerce")
        reasons[ok & (year < 1970)] = "before 1970"
        reasons[ok & (year > 2261)] = future  # beyond what a nanosecond time can hold
        ok &= year.between(1970, 2261)
        times = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
        with_offset = ok & text.str.contains(_OFFSET, regex=True, na=False)
        for group in (with_offset, ok & ~with_offset):
            if group.any():
                times[group] = pd.to_datetime(text[group], utc=True, format="ISO8601",
                                              errors="coerce")
    early, late = times.lt(EPOCH), times.gt(latest)
    reasons[early.fillna(False)] = "before 1970"
    reasons[late.fillna(False)] = future
    kept = times.mask(early | late)
    return kept.astype("datetime64[ns, UTC]"), reasons


def _days(span: pd.Timedelta) -> str:
    days = span / pd.Timedelta(days=1)
    return f"{days:g} day" + ("" if days == 1 else "s")
