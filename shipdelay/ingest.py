"""Import real hubs, shipments, legs, tracking events and outcomes into the lake, row by row.

Bad input is answered, never dropped and never fatal (docs/design.md, principle 7): each row lands
in its lake table or in `rejects` with its 1-based data row number, the raw row as JSON and
all its reasons, each naming the field. A missing required column rejects every row ("missing
column X"): nothing is lost and the fix is plain. Steps, vectorized: rename (`mapping`); coerce
each column ourselves, so one "abc" in a float column rejects one row, not the file; validate
with the contract's pandera schemas (lazy, failures mapped back to rows); check hubs and
shipments against the lake; append with `skip_existing`, so a second import of a file adds
nothing, rejects included (keyed by table, source file name and row number).

Decisions: times must be ISO-8601 (naive = UTC; "01/02/2024" is rejected, not guessed); text
is stripped and only an empty cell is missing ("NA" is Namibia); nullable columns may be absent;
a key repeated in a file keeps its first good row, identical repeats count as duplicates and
differing ones are rejected. Import hubs, then shipments, then the rest.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from shipdelay import contract
from shipdelay.lake import Lake

KINDS = {"hubs": "hubs", "shipments": "shipments", "legs": "legs",
         "events": "tracking_events", "outcomes": "outcomes", "weather": "hub_weather"}

# Foreign keys: column -> (referenced table, its key column), checked against the lake.
_HUB, _SHIPMENT = ("hubs", "hub_id"), ("shipments", "shipment_id")
REFERENCES: dict[str, list[tuple[str, tuple[str, str]]]] = {
    "shipments": [("origin_hub", _HUB), ("destination_hub", _HUB)],
    "legs": [("shipment_id", _SHIPMENT), ("from_hub", _HUB), ("to_hub", _HUB)],
    "tracking_events": [("shipment_id", _SHIPMENT), ("hub_id", _HUB)],
    "outcomes": [("shipment_id", _SHIPMENT)],
    "hub_weather": [("hub_id", _HUB)],
}

_TRUE, _FALSE = {"true", "t", "yes", "y", "1"}, {"false", "f", "no", "n", "0"}


@dataclass
class IngestReport:
    """What one import did: rows = accepted + duplicates + rejected."""

    table: str
    source: str
    rows: int
    accepted: int
    duplicates: int
    rejected: int
    missing_columns: list[str] = field(default_factory=list)
    rejects: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def summary(self) -> str:
        text = (f"{self.source} -> {self.table}: {self.rows} rows, {self.accepted} accepted, "
                f"{self.duplicates} already present, {self.rejected} rejected")
        if self.missing_columns:
            text += f" (missing column(s): {', '.join(self.missing_columns)})"
        return text + ("; see lake table 'rejects'" if self.rejected else "")


def load_mapping(path_or_pairs: str | Path | Sequence[str] | Mapping[str, str] | None
                 ) -> dict[str, str]:
    """{contract_column: source_column} from a JSON file or "contract=source" strings."""
    if path_or_pairs is None:
        return {}
    if isinstance(path_or_pairs, (str, Path)):
        path_or_pairs = json.loads(Path(path_or_pairs).read_text())
        if not isinstance(path_or_pairs, dict):
            raise ValueError(  # noqa: TRY004 - bad file content, not a bad argument
                "a mapping file holds one JSON object {contract_column: source_column}")
    if isinstance(path_or_pairs, Mapping):
        return {str(k): str(v) for k, v in path_or_pairs.items()}
    mapping = {}
    for pair in path_or_pairs:
        target, sep, source = (part.strip() for part in pair.partition("="))
        if not (sep and target and source):
            raise ValueError(f"mapping '{pair}' is not of the form contract_column=source_column")
        mapping[target] = source
    return mapping


def ingest(path: str | Path, kind: str, lake: Lake, mapping: Mapping[str, str] | None = None,
           source: str | None = None) -> IngestReport:
    """Import one CSV or Parquet file of `kind` into the lake; bad rows go to `rejects`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not '{kind}'")
    table, path, mapping = KINDS[kind], Path(path), dict(mapping or {})
    schema, source = contract.SCHEMAS[table], source or path.name
    unknown = sorted(set(mapping) - set(schema.columns))
    if unknown:
        raise ValueError(f"mapping names column(s) not in table '{table}': {', '.join(unknown)}")

    raw = _read(path)
    frame = _rename(raw, mapping)
    missing = [c for c, col in schema.columns.items() if c not in frame and not col.nullable]
    if missing:
        reason = "; ".join(f"missing column {c}" + (f" (mapped from '{mapping[c]}')"
                                                    if c in mapping else "") for c in missing)
        rejects = _write_rejects(lake, table, source, raw, _problems(frame.index, reason))
        return IngestReport(table, source, len(raw), 0, 0, len(rejects), missing, rejects)

    frame = frame.reindex(columns=list(schema.columns))  # an absent nullable column is all null
    frame, problems = _coerce(frame, schema)
    problems = pd.concat([problems, _schema_problems(frame, schema, problems),
                          _reference_problems(frame, table, lake)], ignore_index=True)
    candidates = frame.drop(index=problems["row"].unique())
    conflicts, repeats = _repeated_keys(candidates, table)
    good = candidates.drop(index=conflicts["row"]).drop(index=repeats)
    written = lake.append(table, schema.validate(good, lazy=True), validated=True,
                          skip_existing=True)
    rejects = _write_rejects(lake, table, source, raw,
                             pd.concat([problems, conflicts], ignore_index=True))
    return IngestReport(table, source, len(raw), written, len(good) + len(repeats) - written,
                        len(rejects), [], rejects)


def export_table(lake: Lake, table: str, out_path: str | Path) -> Path:
    """Write a lake table to CSV sorted by key, times as ISO-8601 UTC, ready to re-import."""
    frame = lake.read(table).sort_values(list(contract.KEYS[table]), ignore_index=True)
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            frame[name] = frame[name].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_path, index=False)  # floats as repr: they read back exactly
    return out_path


def _read(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix.lower() == ".csv":  # all as text, to see the raw value
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    else:
        raise ValueError(f"{path}: expected a .csv or .parquet file")
    return frame.reset_index(drop=True)  # position i is data row i + 1


def _rename(raw: pd.DataFrame, mapping: Mapping[str, str]) -> pd.DataFrame:
    """Contract names for mapped columns; a mapped contract column comes only from its source."""
    renames = {src: dst for dst, src in mapping.items() if src in raw}
    frame = raw.drop(columns=[c for c in mapping if c in raw and c not in renames])
    frame = frame.rename(columns=renames)
    for name in frame.columns:
        if pd.api.types.infer_dtype(frame[name], skipna=True) == "string":
            stripped = frame[name].str.strip()
            frame[name] = stripped.mask(stripped.eq(""))
    return frame


def _problems(rows: object, reasons: object, column: str | None = None) -> pd.DataFrame:
    """Problems found: the row's position in the file, the column at fault (if one), why."""
    rows = np.asarray(rows, dtype="int64")
    return pd.DataFrame({"row": rows, "column": pd.Series([column] * len(rows), dtype=object),
                         "reason": np.broadcast_to(np.asarray(reasons, dtype=object), rows.shape)})


_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"


def _utc_times(values: pd.Series) -> pd.Series:
    """ISO-8601 text or datetimes -> UTC; naive values are UTC. Offset and naive values are parsed
    apart: parsed together, pandas gives a naive value the offset of a row before it."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.tz_convert("UTC") if values.dt.tz is not None else values.dt.tz_localize("UTC")
    text = values.astype("string")
    with_offset = text.str.contains(_OFFSET, regex=True, na=False)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if with_offset.any():
        out[with_offset] = pd.to_datetime(text[with_offset], utc=True, format="ISO8601",
                                          errors="coerce")
    naive = ~with_offset & text.notna()
    if naive.any():
        out[naive] = pd.to_datetime(text[naive], format="ISO8601", errors="coerce").dt.tz_localize("UTC")
    return out


def _coerce(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each column to its contract dtype; a value present that does not convert is a problem."""
    out, problems = {}, [_problems([], [])]
    for name, column in schema.columns.items():
        values, dtype = frame[name], str(column.dtype)
        label: str | pd.Series = "not a number"
        if dtype.startswith("datetime64"):
            parsed = _utc_times(values)
            label = "not an ISO-8601 timestamp"
        elif dtype == "bool":
            text = values.astype(str).str.lower()
            parsed = pd.Series(pd.NA, index=values.index, dtype="boolean")
            parsed[text.isin(_TRUE)], parsed[text.isin(_FALSE)] = True, False
            label = "not a boolean"
        elif dtype in ("float64", "int64", "Int64"):
            parsed = pd.to_numeric(values, errors="coerce").astype("float64")
            if not pd.api.types.is_numeric_dtype(values.dtype):
                ok = parsed.notna()
                try:  # float() is exact; to_numeric can be one ulp off, breaking round trips
                    parsed[ok] = values[ok].astype("float64")
                except (TypeError, ValueError):
                    pass
            if dtype != "float64":
                whole = parsed.isna() | (parsed % 1 == 0)
                label = pd.Series(label, index=values.index).where(whole, "not an integer")
                parsed = parsed.where(whole).astype("Int64")
        else:
            parsed = values.astype(contract.STR)
        failed = values.notna() & parsed.isna()
        if failed.any():
            label = label[failed] if isinstance(label, pd.Series) else label
            reasons = f"{name}: " + label + ": " + values[failed].map(_show)
            problems.append(_problems(values.index[failed], reasons, name))
        out[name] = parsed
    return pd.DataFrame(out, index=frame.index), pd.concat(problems, ignore_index=True)


def _schema_problems(frame: pd.DataFrame, schema: pa.DataFrameSchema,
                     unparsed: pd.DataFrame) -> pd.DataFrame:
    """Pandera's verdict per row (lazy: all failures); key uniqueness is `_repeated_keys`'s."""
    schema = copy.deepcopy(schema.update_columns({c: {"unique": False} for c in schema.columns}))
    schema.unique = None
    try:
        schema.validate(frame, lazy=True)
        return _problems([], [])
    except pandera.errors.SchemaErrors as err:
        cases = err.failure_cases.astype({"column": object})
    if cases["index"].isna().any():  # a failure not tied to a row applies to every row
        whole = cases[cases["index"].isna()].drop(columns="index")
        cases = pd.concat([cases[cases["index"].notna()],
                           whole.merge(pd.DataFrame({"index": frame.index}), how="cross")])
    cases = cases.assign(index=cases["index"].astype("int64"))
    # a null in an int column also fails its dtype; and a null left by a value we could not
    # parse was reported by `_coerce`: one reason each is enough
    cases = cases[~(cases["check"].str.startswith("coerce_dtype") & cases["failure_case"].isna())]
    null = cases["check"].eq("not_nullable")
    unparsed_cell = pd.MultiIndex.from_frame(cases[["index", "column"]]).isin(
        pd.MultiIndex.from_frame(unparsed[["row", "column"]]))
    # Frame-wide checks (element_wise=False) list every column of a failing row: one reason
    # per row, skipped where a value is missing, as a comparison with it says nothing new.
    frame_wide = cases["schema_context"].eq("DataFrameSchema")
    incomplete = cases["index"].isin(set(unparsed["row"]) | set(cases.loc[null, "index"]))
    wide = cases[frame_wide & ~incomplete].drop_duplicates(["index", "check"])
    cols = cases[~frame_wide & ~(null & unparsed_cell)]
    col_reasons = [
        f"{c}: missing value" if check == "not_nullable" else f"{c}: {check} (got {_show(value)})"
        for c, check, value in zip(cols["column"], cols["check"], cols["failure_case"],
                                   strict=True)]
    return pd.concat([_problems(cols["index"], col_reasons),
                      _problems(wide["index"], wide["check"])], ignore_index=True)


def _reference_problems(frame: pd.DataFrame, table: str, lake: Lake) -> pd.DataFrame:
    """Rows naming a hub or shipment the lake does not know."""
    problems, known = [_problems([], [])], {}
    for name, (target, key) in REFERENCES.get(table, []):
        if target not in known:
            ids = lake.read(target, columns=[key])[key] if lake.exists(target) else []
            known[target] = pd.Index(ids, dtype=contract.STR)
        unknown = frame[name].notna() & ~frame[name].isin(known[target])
        noun = "hub" if target == "hubs" else "shipment"
        reasons = f"{name}: unknown {noun} " + frame.loc[unknown, name].astype(object).map(_show)
        problems.append(_problems(frame.index[unknown], reasons, name))
    return pd.concat(problems, ignore_index=True)


def _repeated_keys(frame: pd.DataFrame, table: str) -> tuple[pd.DataFrame, pd.Index]:
    """Later rows repeating a key of the file: rejects for differing ones, and identical ones."""
    keys = list(contract.KEYS[table])
    repeated = frame.duplicated(subset=keys, keep="first")
    if not repeated.any():
        return _problems([], []), frame.index[:0]
    first_row = frame.index.to_series().groupby([frame[k] for k in keys]).transform("first")
    later = frame[repeated]
    first = frame.loc[first_row[repeated].to_numpy()].set_index(later.index)
    same = (later.eq(first).fillna(False) | (later.isna() & first.isna())).all(axis=1)
    differ = later[~same]
    key = differ[keys[0]].astype(object).map(_show).radd(f"{keys[0]}=")
    for k in keys[1:]:
        key = key + f", {k}=" + differ[k].astype(object).map(_show)
    first_number = (first_row[differ.index] + 1).astype(str)
    reasons = "duplicate key " + key + " differs from row " + first_number
    return _problems(differ.index, reasons), later.index[same.to_numpy()]


def _write_rejects(lake: Lake, table: str, source: str, raw: pd.DataFrame,
                   problems: pd.DataFrame) -> pd.DataFrame:
    """One rejects row per bad data row, all its reasons joined; once per file and row."""
    reasons = (problems.drop_duplicates(["row", "reason"])
               .groupby("row", sort=True)["reason"].agg("; ".join))
    bad = raw.loc[reasons.index].astype(object)
    rejects = contract.validate("rejects", pd.DataFrame({
        "table": table,
        "source": source,
        "row_number": reasons.index.to_numpy(dtype="int64") + 1,
        "reason": reasons.to_numpy(),
        "raw": [json.dumps(row, default=str, ensure_ascii=False)
                for row in bad.where(bad.notna(), None).to_dict(orient="records")],
        "rejected_at": pd.Timestamp.now(tz="UTC"),
    }))
    lake.append("rejects", rejects, validated=True, skip_existing=True)
    return rejects


def _show(value: object) -> str:
    """A value for a message: strings quoted, numbers plain."""
    return repr(value) if isinstance(value, str) else str(value)
