"""Import real hubs, shipments, legs, tracking events, outcomes and weather into the lake.

Bad input is answered, never dropped and never fatal: each data row lands in its lake table
or in `rejects` with its 1-based row number, the raw row as JSON and all its reasons, each
naming the field; no input ends in a traceback.

- The file (`ingest_files`): a CSV is split record by record, so a row with the wrong number of
  fields, broken quoting or an unterminated quote is one reject (an unterminated quote takes
  the rest of the file with it, and the rows before it import); a file that cannot be read at
  all (empty, binary, JSON, compressed, a corrupt Parquet file) is refused with `FileRefused`,
  one sentence naming it, and nothing is written.
- The mapping (`--map contract=source`): a contract column it does not know, or a source
  column the file lacks, is a `UsageError` before anything is written. Columns of the file
  that feed no contract column are ignored and listed in the report.
- The values (`ingest_values`): each column coerced by us, so one "abc" in a float column
  rejects one row; text with undecodable bytes, NUL or control characters, numbers that are
  not finite, integers beyond +-2**53 and times before 1970 or too far after the import's
  clock are rejected. Then the contract's pandera schemas (lazy, failures mapped back to
  rows), the hubs and shipments the rows refer to, and keys repeated within the file.
- The write: the table's rows and the rejects go in one lake transaction, so readers see the
  whole import or none of it, even if the process is killed; with `skip_existing`, a second
  import of a file adds nothing, rejects included (keyed by table, source file name and row).

Decisions: naive times are UTC; "01/02/2024" is rejected, not guessed; text is stripped and only
an empty cell is missing ("NA" is Namibia); nullable columns may be absent; a key repeated in a
file keeps its first good row, identical repeats count as duplicates and differing ones are
rejected. Import hubs, then shipments, then the rest.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pandera.errors
import pandera.pandas as pa
import pyarrow.dataset as ds

from shipdelay import contract, itinerary
from shipdelay.ingest_files import FileRefused, RawFile, UsageError, read_file
from shipdelay.ingest_value_map import apply_value_map, check_value_map, load_value_map
from shipdelay.ingest_values import coerce, problems_frame, show, text_problems
from shipdelay.lake import Lake

__all__ = ["KINDS", "FileRefused", "IngestReport", "UsageError", "export_table", "ingest",
           "load_mapping"]

KINDS = {"hubs": "hubs", "shipments": "shipments", "legs": "legs",
         "events": "tracking_events", "outcomes": "outcomes", "weather": "hub_weather",
         "milestone_plans": "milestone_plans"}

# Foreign keys: column -> (referenced table, its key column), checked against the lake.
_HUB, _SHIPMENT = ("hubs", "hub_id"), ("shipments", "shipment_id")
REFERENCES: dict[str, list[tuple[str, tuple[str, str]]]] = {
    "shipments": [("origin_hub", _HUB), ("destination_hub", _HUB)],
    "legs": [("shipment_id", _SHIPMENT), ("from_hub", _HUB), ("to_hub", _HUB)],
    "tracking_events": [("shipment_id", _SHIPMENT), ("hub_id", _HUB)],
    "outcomes": [("shipment_id", _SHIPMENT)],
    "hub_weather": [("hub_id", _HUB)],
    "milestone_plans": [("shipment_id", _SHIPMENT)],
}
_PAIR = "contract_column=source_column"


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
    ignored_columns: list[str] = field(default_factory=list)
    rejects: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def all_rejected(self) -> bool:
        """Rows came in and none of them could be imported."""
        return self.rows > 0 and self.rejected == self.rows

    def summary(self) -> str:
        text = (f"{self.source} -> {self.table}: {self.rows} rows, {self.accepted} accepted, "
                f"{self.duplicates} already present, {self.rejected} rejected")
        if self.missing_columns:
            text += f" (missing column(s): {', '.join(self.missing_columns)})"
        return text + ("; see lake table 'rejects'" if self.rejected else "")


def load_mapping(path_or_pairs: str | Path | Sequence[str] | Mapping[str, str] | None
                 ) -> dict[str, str]:
    """{contract_column: source_column} from a JSON file or "contract=source" strings;
    UsageError("--map", ...) for a missing or malformed file or pair."""
    if path_or_pairs is None:
        return {}
    if isinstance(path_or_pairs, (str, Path)):
        return _mapping_file(Path(path_or_pairs))
    if isinstance(path_or_pairs, Mapping):
        pairs = dict(path_or_pairs)
    else:
        pairs = {}
        for pair in path_or_pairs:
            target, sep, source = (part.strip() for part in str(pair).partition("="))
            if not (sep and target and source):
                hint = (" (a JSON mapping file must be the only --map)"
                        if str(pair).lower().endswith(".json") else "")
                raise UsageError("--map", f"'{pair}' is not of the form {_PAIR}{hint}")
            if target in pairs:
                raise UsageError("--map", f"'{target}' is mapped twice")
            pairs[target] = source
    bad = [k for k, v in pairs.items() if not (isinstance(k, str) and isinstance(v, str)
                                               and k.strip() and v.strip())]
    if bad:
        raise UsageError("--map", f"the mapping of {show(bad[0])} is not a column name")
    return {k.strip(): v.strip() for k, v in pairs.items()}


def _mapping_file(path: Path) -> dict[str, str]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError("--map", f"the mapping file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError("--map", f"the mapping file {path} cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise UsageError("--map", f"the mapping file {path} is not valid JSON ({err})") from None
    if not isinstance(content, dict) or not all(isinstance(v, str) for v in content.values()):
        raise UsageError("--map", f"the mapping file {path} must hold one JSON object of "
                                  '{"contract_column": "source_column"} strings')
    return load_mapping(content)


def ingest(path: str | Path, kind: str, lake: Lake, mapping: Mapping[str, str] | None = None,
           source: str | None = None, now: pd.Timestamp | None = None,
           values: Mapping[str, Mapping[str, str]] | None = None) -> IngestReport:
    """Import one CSV or Parquet file of `kind` into the lake; bad rows go to `rejects`.

    Raises UsageError (a bad mapping or file type) or FileRefused (an unreadable file) before
    writing anything. `now` is the import's clock (default: the wall clock), the horizon for
    times too far in the future. `values` ({column: {value: replacement}}, `--map-values`)
    rewrites a file's own words for the contract's (`shipdelay.ingest_value_map`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not '{kind}'")
    table, path, mapping = KINDS[kind], Path(path), load_mapping(mapping)
    schema, source = contract.SCHEMAS[table], _printable(source or path.name)
    check_value_map(values := load_value_map(values), schema)
    unknown = sorted(set(mapping) - set(schema.columns))
    if unknown:
        raise UsageError("--map", f"{', '.join(map(repr, unknown))} is not a column of table "
                                  f"'{table}' (its columns: {', '.join(schema.columns)})")
    raw_file = read_file(path)
    raw = raw_file.cells
    absent = [f"'{src}' (mapped to {dst})" for dst, src in mapping.items() if src not in raw]
    if absent:
        raise UsageError("--map", f"{path.name} has no column {', '.join(absent)}")
    sources = {c: mapping.get(c, c) for c in schema.columns if mapping.get(c, c) in raw}
    if not sources and len(raw.columns) == 1 and (sep := _separator(str(raw.columns[0]))):
        raise FileRefused(f"{path.name} is not comma-separated (its header is split by "
                          f"{sep!r}): save it as CSV with commas")
    if not sources:
        raise FileRefused(f"{path.name} has none of the columns of table '{table}' (its header: "
                          f"{', '.join(show(str(c), 30) for c in list(raw.columns)[:8])}"
                          f"{', ...' if len(raw.columns) > 8 else ''}): is --kind right, and "
                          "is the first line a header?")
    ignored = [_printable(str(c)) for c in raw.columns if c not in set(sources.values())]
    clock = (now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC")
    broken = problems_frame(raw_file.broken["row"], raw_file.broken["reason"])
    rows = len(raw) + len(broken)

    missing = [c for c, col in schema.columns.items() if c not in sources and not col.nullable]
    with lake.transaction():
        if missing:
            reason = "; ".join(f"missing column {c}" for c in missing)
            problems = pd.concat([problems_frame(raw.index, reason), broken], ignore_index=True)
            rejects = _write_rejects(lake, table, source, raw_file, problems)
            return IngestReport(table, source, rows, 0, 0, len(rejects), missing, ignored,
                                rejects)
        frame, unparsed = _select(raw_file, sources, schema)
        frame = apply_value_map(frame, values)
        frame, problems = coerce(frame, schema, clock)
        unparsed = pd.concat([unparsed, problems], ignore_index=True)
        problems = pd.concat([unparsed, _schema_problems(frame, schema, unparsed),
                              _reference_problems(frame, table, lake),
                              _itinerary_problems(frame, table, lake)], ignore_index=True)
        candidates = frame.drop(index=problems["row"].unique())
        conflicts, repeats = _repeated_keys(candidates, table)
        good = candidates.drop(index=conflicts["row"]).drop(index=repeats)
        written = lake.append(table, schema.validate(good, lazy=True), validated=True,
                              skip_existing=True)
        rejects = _write_rejects(lake, table, source, raw_file,
                                 pd.concat([problems, conflicts, broken], ignore_index=True))
    return IngestReport(table, source, rows, written, len(good) + len(repeats) - written,
                        len(rejects), [], ignored, rejects)


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


def _select(raw_file: RawFile, sources: dict[str, str], schema: pa.DataFrameSchema
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The contract's columns from their source columns (absent nullable ones all null), with
    cells of unreadable text or an unsupported Parquet type cleared and listed as problems;
    text stripped, an empty cell missing."""
    raw = raw_file.cells
    frame = pd.DataFrame({c: raw[src] for c, src in sources.items()}, index=raw.index)
    found = [text_problems(frame, list(frame.columns))]
    for name, src in sources.items():
        if src in raw_file.unsupported:
            present = frame[name].notna()
            found.append(problems_frame(frame.index[present], f"{name}: a Parquet column of "
                                        f"type {raw_file.unsupported[src]}", name))
    problems = pd.concat(found, ignore_index=True)
    for name, rows in problems.groupby("column")["row"]:
        frame.loc[rows.to_numpy(), name] = None
    for name in frame.columns:
        if frame[name].dtype == object:
            is_text = frame[name].map(type).eq(str)
            stripped = frame[name].where(~is_text, frame[name].where(is_text).str.strip())
            frame[name] = stripped.mask(is_text & stripped.eq(""), None)
    return frame.reindex(columns=list(schema.columns)), problems


def _schema_problems(frame: pd.DataFrame, schema: pa.DataFrameSchema,
                     unparsed: pd.DataFrame) -> pd.DataFrame:
    """Pandera's verdict per row (lazy: all failures); key uniqueness is `_repeated_keys`'s."""
    schema = copy.deepcopy(schema.update_columns({c: {"unique": False} for c in schema.columns}))
    schema.unique = None
    try:
        schema.validate(frame, lazy=True)
        return problems_frame([], [])
    except pandera.errors.SchemaErrors as err:
        cases = err.failure_cases.astype({"column": object})
    if cases["index"].isna().any():  # a failure not tied to a row applies to every row
        whole = cases[cases["index"].isna()].drop(columns="index")
        cases = pd.concat([cases[cases["index"].notna()],
                           whole.merge(pd.DataFrame({"index": frame.index}), how="cross")])
    cases = cases.assign(index=cases["index"].astype("int64"))
    # a null in an int column also fails its dtype; and a null left by a value we could not
    # parse was reported by `coerce`: one reason each is enough
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
        f"{c}: missing value" if check == "not_nullable" else f"{c}: {check} (got {show(value)})"
        for c, check, value in zip(cols["column"], cols["check"], cols["failure_case"],
                                   strict=True)]
    return pd.concat([problems_frame(cols["index"], col_reasons),
                      problems_frame(wide["index"], wide["check"])], ignore_index=True)


def _reference_problems(frame: pd.DataFrame, table: str, lake: Lake) -> pd.DataFrame:
    """Rows naming a hub or shipment the lake does not know."""
    problems, known = [problems_frame([], [])], {}
    for name, (target, key) in REFERENCES.get(table, []):
        if target not in known:
            ids = lake.read(target, columns=[key])[key] if lake.exists(target) else []
            known[target] = pd.Index(ids, dtype=contract.STR)
        unknown = frame[name].notna() & ~frame[name].isin(known[target])
        noun = "hub" if target == "hubs" else "shipment"
        reasons = f"{name}: unknown {noun} " + frame.loc[unknown, name].astype(object).map(show)
        problems.append(problems_frame(frame.index[unknown], reasons, name))
    return pd.concat(problems, ignore_index=True)


def _itinerary_problems(frame: pd.DataFrame, table: str, lake: Lake) -> pd.DataFrame:
    """Legs naming a leg their shipment does not have as feeds_leg; planned steps of a leg it
    does not have; tracking events whose leg the plan does not know (`shipdelay.itinerary`): a
    leg event without a leg_index gets the leg its hub tells (written into `frame`), or is
    rejected with the reason."""
    if table not in ("legs", "tracking_events", "milestone_plans") or frame.empty:
        return problems_frame([], [])
    ids = frame["shipment_id"].dropna().astype(str).unique().tolist()
    known = pd.DataFrame(columns=["shipment_id", "leg_index", "from_hub", "to_hub"])
    if lake.exists("legs"):
        known = lake.read("legs", columns=list(known.columns),
                          filter=ds.field("shipment_id").isin(ids))
    if table == "legs":
        reason = itinerary.feeds_problems(frame, known)
        bad = reason != ""
        return problems_frame(frame.index[bad], reason[bad].to_numpy(), "feeds_leg")
    if table == "milestone_plans":  # a planned step of a leg the plan does not have
        ready = frame["shipment_id"].notna() & frame["leg_index"].notna()
        plans = frame[ready].assign(hub_id="", event_type="checked_in")
        _, reason = itinerary.event_legs(plans, known)
        bad = reason != ""
        return problems_frame(reason.index[bad], reason[bad].to_numpy(), "leg_index")
    ready = frame["shipment_id"].notna() & frame["event_type"].notna() & frame["hub_id"].notna()
    leg, reason = itinerary.event_legs(frame[ready], known)
    frame.loc[ready, "leg_index"] = leg
    bad = reason != ""
    return problems_frame(reason.index[bad], reason[bad].to_numpy(), "leg_index")


def _repeated_keys(frame: pd.DataFrame, table: str) -> tuple[pd.DataFrame, pd.Index]:
    """Later rows repeating a key of the file: rejects for differing ones, and identical ones."""
    keys = list(contract.KEYS[table])
    repeated = frame.duplicated(subset=keys, keep="first")
    if not repeated.any():
        return problems_frame([], []), frame.index[:0]
    first_row = frame.index.to_series().groupby([frame[k] for k in keys],
                                                dropna=False).transform("first")
    later = frame[repeated]
    first = frame.loc[first_row[repeated].to_numpy()].set_index(later.index)
    same = (later.eq(first).fillna(False) | (later.isna() & first.isna())).all(axis=1)
    differ = later[~same]
    key = differ[keys[0]].astype(object).map(show).radd(f"{keys[0]}=")
    for k in keys[1:]:
        key = key + f", {k}=" + differ[k].astype(object).map(show)
    first_number = (first_row[differ.index] + 1).astype(str)
    reasons = "duplicate key " + key + " differs from row " + first_number
    return problems_frame(differ.index, reasons), later.index[same.to_numpy()]


def _write_rejects(lake: Lake, table: str, source: str, raw_file: RawFile,
                   problems: pd.DataFrame) -> pd.DataFrame:
    """One rejects row per bad data row, all its reasons joined; once per file and row."""
    reasons = (problems.drop_duplicates(["row", "reason"])
               .groupby("row", sort=True)["reason"].agg("; ".join))
    raw = pd.Series(None, index=reasons.index, dtype=object)
    readable = reasons.index.intersection(raw_file.cells.index)
    raw[readable] = _raw_json(raw_file.cells.loc[readable])
    broken = raw_file.broken.set_index("row")["raw"]
    raw[broken.index.intersection(reasons.index)] = broken
    rejects = contract.validate("rejects", pd.DataFrame({
        "table": table,
        "source": source,
        "row_number": reasons.index.to_numpy(dtype="int64") + 1,
        "reason": reasons.map(_printable).to_numpy(),
        "raw": raw.map(_printable).to_numpy(),
        "rejected_at": pd.Timestamp.now(tz="UTC"),
    }))
    lake.append("rejects", rejects, validated=True, skip_existing=True)
    return rejects


def _raw_json(rows: pd.DataFrame) -> list[str]:
    """Each row as JSON, as it was read (CSV cells as text, an empty cell null)."""
    def plain(value: object) -> object:
        if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, float) and math.isinf(value):
            return repr(value)  # JSON has no infinity
        return value
    cells = rows.astype(object).map(plain)
    return [json.dumps(row, default=str, ensure_ascii=False)
            for row in cells.to_dict(orient="records")]


def _separator(header: str) -> str | None:
    """The separator a one-column header seems split by, if any (';' in much of Europe)."""
    return next((sep for sep in (";", "\t", "|") if sep in header), None)


def _printable(text: str) -> str:
    """Text that can be stored: bytes that were not UTF-8 shown as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
