"""`shipdelay ingest --map-values`: a company's own words for a contract's closed lists.

Real data names things its own way: a mode "barge" or "ferry", a service level "premium". A
column with a closed list of values (a leg's `mode`: truck, rail, air, ocean) rejects a value
outside it, with a reason naming this option; `--map-values mode=barge:ocean,ferry:ocean`
rewrites such values before the row is checked. Columns without a closed list (service level,
hub kind) accept any text, so mapping them is optional: it merges synonyms ("prio" and
"priority") into one category the model learns from.

Matching is exact (after the cell is stripped of surrounding blanks) and case-sensitive, like
every text of the contract; values not named are left as they are. The raw row kept with a
reject is the file's, before mapping. A mapping that names a column the table does not have, a
column that is not text, or a target outside the column's closed list is a `UsageError` before
anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from shipdelay.ingest_files import UsageError

__all__ = ["OPTION", "apply_value_map", "check_value_map", "load_value_map"]

OPTION = "--map-values"
_FORM = "column=value:replacement[,value:replacement...]"
ValueMap = dict[str, dict[str, str]]


def load_value_map(spec: str | Path | Sequence[str] | Mapping[str, Mapping[str, str]] | None
                   ) -> ValueMap:
    """{column: {value: replacement}} from "column=value:replacement,..." strings (repeatable,
    one column may come back with more pairs), a JSON file holding that object, or the object
    itself; UsageError(--map-values) for anything malformed."""
    if spec is None:
        return {}
    if isinstance(spec, (str, Path)):
        return _from_file(Path(spec))
    if isinstance(spec, Mapping):
        return _checked_object(spec, "the mapping")
    out: ValueMap = {}
    for item in spec:
        column, sep, pairs = (part.strip() for part in str(item).partition("="))
        if not (sep and column and pairs):
            raise UsageError(OPTION, f"'{item}' is not of the form {_FORM}")
        for pair in pairs.split(","):
            value, colon, replacement = (part.strip() for part in pair.partition(":"))
            if not (colon and value and replacement):
                raise UsageError(OPTION, f"'{pair.strip()}' in '{item}' is not of the form "
                                         "value:replacement")
            known = out.setdefault(column, {})
            if known.get(value, replacement) != replacement:
                raise UsageError(OPTION, f"{column} value '{value}' is mapped to both "
                                         f"'{known[value]}' and '{replacement}'")
            known[value] = replacement
    return out


def _from_file(path: Path) -> ValueMap:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(OPTION, f"the value mapping file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(OPTION, f"the value mapping file {path} cannot be read as JSON "
                                 f"({err})") from None
    return _checked_object(content, f"the value mapping file {path}")


def _checked_object(content: object, what: str) -> ValueMap:
    shape = ('one JSON object of {"column": {"value": "replacement", ...}} strings, '
             'e.g. {"mode": {"barge": "ocean"}}')
    ok = isinstance(content, Mapping) and all(
        isinstance(column, str) and column.strip() and isinstance(pairs, Mapping)
        and all(isinstance(v, str) and isinstance(r, str) and v.strip() and r.strip()
                for v, r in pairs.items())
        for column, pairs in content.items())
    if not ok:
        raise UsageError(OPTION, f"{what} must hold {shape}")
    return {column.strip(): {v.strip(): r.strip() for v, r in pairs.items()}
            for column, pairs in content.items()}


def check_value_map(values: ValueMap, schema: pa.DataFrameSchema) -> None:
    """UsageError unless every mapped column is a text column of `schema` and every
    replacement is allowed there."""
    for column, pairs in values.items():
        if column not in schema.columns:
            raise UsageError(OPTION, f"'{column}' is not a column of table '{schema.name}' "
                                     f"(its columns: {', '.join(schema.columns)})")
        if str(schema.columns[column].dtype) != "string[pyarrow]":
            raise UsageError(OPTION, f"'{column}' of table '{schema.name}' is not a text "
                                     "column; only text values can be mapped")
        allowed = _allowed(schema.columns[column])
        wrong = [r for r in pairs.values() if allowed is not None and r not in allowed]
        if wrong:
            listed = ", ".join(allowed[:8]) + (", ..." if len(allowed) > 8 else "")
            raise UsageError(OPTION, f"{column} values can only be mapped to one of "
                                     f"{listed}, not '{wrong[0]}'")


def _allowed(column: pa.Column) -> list[str] | None:
    """The closed list of a column's values (its `isin` check), if it has one."""
    for check in column.checks:
        values = (check.statistics or {}).get("allowed_values")
        if values is not None:
            return list(values)
    return None


def apply_value_map(frame: pd.DataFrame, values: ValueMap) -> pd.DataFrame:
    """`frame` (cells stripped, missing as None) with the mapped values replaced."""
    if not values:
        return frame
    frame = frame.copy()
    for column, pairs in values.items():
        cells = frame[column]
        hit = cells.isin(list(pairs))
        if hit.any():
            frame.loc[hit, column] = cells[hit].map(pairs)
    return frame
