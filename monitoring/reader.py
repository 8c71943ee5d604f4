"""Reading the prediction log for monitoring: the whole window in one scan, de-duplicated and
joined to the outcomes known at the cut-off, then reduced by DuckDB.

One DuckDB session reads every log file of the window once (an Arrow dataset when encryption is
on, DuckDB's Parquet reader otherwise) into a compact in-memory table: the key, the scores, the
slices, the journey stage, each view's count of missing features and, for every column of the
drift reference, the reference bin of its value (one byte). The outcomes are read once, joined
on the way in. Everything the monitor reports is then an aggregate of that table (counts, drift
histograms, missing rates) or the judged rows' few numeric columns (`judged`), never a Python
loop over days or slices.

A prediction logged twice (same door, shipment, instant and model version: a stream batch
replayed after a crash, a batch run again) is kept once, the first written. Outcomes count
only when delivered at or before the cut-off: a later delivery was not known yet.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from features.schema import MODEL_FEATURES
from monitoring.drift import (
    DRIFT_SLICES,
    OWN_STATISTICS,
    PREDICTION,
    SAMPLE_KEYS,
    Binning,
    Reference,
)
from monitoring.prediction_log import KEY, log_schema
from shipdelay.lake import Lake
from shipdelay.parquet_io import dataset, duckdb_dataset, sql_source
from training.evaluate import STAGE_EDGES, STAGES

_DAY = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")
MEMORY_LIMIT = "2GB"
TEXT_SLICES = ("path", "model_version", "main_mode", "lane_id", "carrier_id", "customer_id")
JUDGED = "delivered_s IS NOT NULL AND is_late IS NOT NULL"
_NUMERIC = ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT",
            "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT", "DECIMAL", "BOOLEAN")


def log_days(root: Path) -> dict[date, list[Path]]:
    """The log's files by day partition (every path's)."""
    out: dict[date, list[Path]] = {}
    root = Path(root)
    if not root.exists():
        return out
    for folder in sorted(root.iterdir()):
        match = _DAY.match(folder.name)
        if match:
            files = sorted(folder.glob("path=*/part-*.parquet"))
            if files:
                out[date.fromisoformat(match.group(1))] = files
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _numeric(kind: str) -> bool:
    return kind.upper().startswith(_NUMERIC)


def _missing(column: str, kind: str) -> str:
    """SQL: the value is missing (NULL, or NaN for numbers), as pandas' `isna` says."""
    c = _q(column)
    return f"({c} IS NULL OR isnan(CAST({c} AS DOUBLE)))" if _numeric(kind) else f"({c} IS NULL)"


def bin_sql(b: Binning, column: str, kind: str) -> str:
    """SQL for `Binning.codes` of one column: the same bin for every value."""
    last = b.bins - 1
    if b.edges is not None:
        if not _numeric(kind):
            return str(last)  # not numbers: missing, as `as_numbers` reads them
        x = f"CAST({_q(column)} AS DOUBLE)"
        # searchsorted(edges, x, side="left") is the count of edges below x
        above = " + ".join(f"CAST({x} > CAST('{float(e)!r}' AS DOUBLE) AS UTINYINT)"
                           for e in b.edges) or "0"
        return f"CAST(CASE WHEN {_missing(column, kind)} THEN {last} ELSE {above} END AS UTINYINT)"
    if _numeric(kind):  # numbers never equal a level's text
        return f"CAST(CASE WHEN {_missing(column, kind)} THEN {last} ELSE {last - 1} END AS UTINYINT)"
    c = _q(column)
    levels = " ".join(f"WHEN {_text(str(v))} THEN {i}" for i, v in enumerate(b.levels))
    inner = f"CASE {c} {levels} ELSE {last - 1} END" if levels else str(last - 1)
    return f"CAST(CASE WHEN {c} IS NULL THEN {last} ELSE {inner} END AS UTINYINT)"


def stage_sql(kinds: dict[str, str]) -> str:
    """SQL for `training.evaluate.journey_stage`'s codes (-1: no stage)."""
    def number(c):
        return f"CAST({_q(c)} AS DOUBLE)" if c in kinds and _numeric(kinds[c]) else "NULL"

    done, frac = number("milestones_done"), number("transit_elapsed_frac")
    band = " + ".join(f"CAST({frac} > {e!r} AS TINYINT)" for e in STAGE_EDGES)
    return (f"CAST(CASE WHEN {done} IS NULL OR isnan({done}) OR {done} <= 0 THEN 0 "
            f"WHEN {frac} IS NULL OR isnan({frac}) THEN -1 ELSE 1 + {band} END AS TINYINT)")


class LogReader:
    """The window's predictions in one DuckDB table (`log`), joined to the outcomes known at the
    cut-off; drift bins for the columns of `ref` (`codes`: column -> feature name)."""

    def __init__(self, log_root: Path, lake: Lake, as_of: pd.Timestamp, start: date,
                 end: date, ref: Reference | None = None):
        self.root, self.as_of = Path(log_root), as_of
        self.con = duckdb.connect()
        self.con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET TimeZone = 'UTC'")
        self._outcomes(lake)
        files = [f for day, fs in log_days(self.root).items() if start <= day <= end
                 for f in fs]
        self.codes: dict[str, str] = {}
        self.views: dict[str, tuple[str, int]] = {}
        self.raw = self.duplicates = 0
        if files:
            self._scan(self._source(files), ref)
        else:
            self.con.execute("CREATE TABLE log AS SELECT NULL::DATE AS day, NULL::VARCHAR AS "
                             "path, NULL::VARCHAR AS model_version, NULL::VARCHAR AS "
                             "shipment_id, NULL::DOUBLE AS delivered_s, NULL::BOOLEAN AS "
                             "is_late, NULL::DOUBLE AS p_late WHERE false")

    def _outcomes(self, lake: Lake) -> None:
        files = lake.files("outcomes")
        if files:
            self.con.execute(
                f"CREATE TABLE outcomes AS SELECT shipment_id, delivered_at, delay_hours, "
                f"is_late FROM {sql_source(self.con, files)} WHERE delivered_at <= $t",
                {"t": self.as_of.to_pydatetime()})
        else:
            self.con.execute("CREATE TABLE outcomes (shipment_id VARCHAR, delivered_at "
                             "TIMESTAMPTZ, delay_hours DOUBLE, is_late BOOLEAN)")

    def _source(self, files: list[Path]) -> str:
        """The log files as one source; when a column's type changed between files (logs
        written before `recent_notes` was kept as text), read every file as today's schema."""
        try:
            return sql_source(self.con, files, union_by_name=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            duckdb_dataset(files)  # unwraps the files' keys before DuckDB scans them
            name = "log_files"
            self.con.register(name, dataset([str(f) for f in files], schema=log_schema()))
            return name

    def _scan(self, source: str, ref: Reference | None) -> None:
        kinds = {r[0]: r[1] for r in
                 self.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        have = kinds.__contains__
        text = [f"{_q(c)}" if have(c) else f"NULL::VARCHAR AS {_q(c)}" for c in TEXT_SLICES]
        numbers = [f"CAST({_q(c)} AS DOUBLE) AS {_q(c)}" if have(c) else
                   f"NULL::DOUBLE AS {_q(c)}" for c in ("p_late", "delay_p10_h",
                                                        "delay_p50_h", "delay_p90_h")]
        select = [*text, "s.shipment_id", "instant", "logged_at", "CAST(instant AS DATE) AS day",
                  "epoch(instant) AS instant_s", "epoch(eta) AS eta_s" if have("eta") else
                  "NULL::DOUBLE AS eta_s", *numbers, f"{stage_sql(kinds)} AS stage",
                  "epoch(o.delivered_at) AS delivered_s", "o.delay_hours", "o.is_late"]
        for i, (view, features) in enumerate(MODEL_FEATURES.items()):
            present = [f for f in features if have(f)]
            if present:
                self.views[f"m{i}"] = (view, len(present))
                select.append(" + ".join(f"CAST({_missing(f, kinds[f])} AS USMALLINT)"
                                         for f in present) + f" AS m{i}")
        for i, (name, b) in enumerate((ref.binnings if ref else {}).items()):
            column = "p_late" if name == PREDICTION else name
            if have(column):
                self.codes[f"c{i}"] = name
                select.append(f"{bin_sql(b, column, kinds[column])} AS c{i}")
        self.con.execute(
            f"CREATE TABLE log AS SELECT {', '.join(select)} FROM {source} s LEFT JOIN "
            f"outcomes o ON s.shipment_id = o.shipment_id WHERE instant <= $t",
            {"t": self.as_of.to_pydatetime()})
        self.raw = self.con.execute("SELECT count(*) FROM log").fetchall()[0][0]
        key = ", ".join(KEY)
        distinct = self.con.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT {key} FROM log)").fetchall()[0][0]
        if distinct < self.raw:  # replays: keep the first written of each key
            self.con.execute(
                f"DELETE FROM log WHERE rowid IN (SELECT rowid FROM (SELECT rowid, "
                f"row_number() OVER (PARTITION BY {key} ORDER BY logged_at, rowid) AS k "
                f"FROM log) WHERE k > 1)")
        self.duplicates = self.raw - distinct

    def sql(self, query: str, params: dict | None = None) -> pd.DataFrame:
        return self.con.execute(query, params or {}).df()

    def counts_by_day(self) -> pd.DataFrame:
        """[day, path, logged, judged] for each day and door with predictions."""
        return self.sql(f"SELECT day, path, count(*) AS logged, count(*) FILTER ({JUDGED}) "
                        f"AS judged FROM log GROUP BY ALL ORDER BY day, path")

    def versions(self) -> dict[str, int]:
        rows = self.con.execute("SELECT coalesce(model_version, 'None'), count(*) FROM log "
                                "GROUP BY 1").fetchall()
        return {str(v): int(n) for v, n in rows}

    def pending(self) -> pd.DataFrame:
        """[day, path, p] of the predictions not judged yet."""
        return self.sql(f"SELECT day, path, p_late AS p FROM log WHERE NOT ({JUDGED})")

    def missing_by_view(self) -> pd.DataFrame:
        """[day, view, missing_rate]: each view's share of its features missing per day."""
        if not self.views:
            return pd.DataFrame(columns=["day", "view", "missing_rate"])
        sums = ", ".join(f"sum({m}) / (count(*) * {k}) AS {m}"
                         for m, (_, k) in self.views.items())
        wide = self.sql(f"SELECT day, {sums} FROM log GROUP BY day ORDER BY day")
        long = wide.melt(id_vars="day", var_name="m", value_name="missing_rate")
        long["view"] = long["m"].map({m: v for m, (v, _) in self.views.items()})
        order = {m: i for i, m in enumerate(self.views)}
        long = long.assign(o=long["m"].map(order)).sort_values(["day", "o"], kind="stable")
        return long[["day", "view", "missing_rate"]].reset_index(drop=True)

    def drift_by_day(self, ref: Reference) -> dict[date, dict[str, np.ndarray]]:
        """Per day, each reference column's bin counts (one query, a grouping set per
        column)."""
        if not self.codes:
            return {}
        sets = ", ".join(f"(day, {c})" for c in self.codes)
        frame = self.sql(f"SELECT day, {', '.join(self.codes)}, count(*) AS n FROM log "
                         f"GROUP BY GROUPING SETS ({sets})")
        days = sorted(set(pd.to_datetime(frame["day"]).dt.date))
        out: dict[date, dict[str, np.ndarray]] = {d: {} for d in days}
        at = {d: i for i, d in enumerate(days)}
        day_of = pd.to_datetime(frame["day"]).dt.date.map(at).to_numpy()
        for c, name in self.codes.items():
            rows = frame[c].notna().to_numpy()
            bins = ref.binnings[name].bins
            counts = np.zeros((len(days), bins), np.int64)
            np.add.at(counts, (day_of[rows], frame.loc[rows, c].to_numpy(int)),
                      frame.loc[rows, "n"].to_numpy(np.int64))
            for d, i in at.items():
                out[d][name] = counts[i]
        return out

    def drift_by_slice(self, ref: Reference, column: str, since: date
                       ) -> dict[str, dict[str, np.ndarray]]:
        """Per group of `column` (rows from `since` on), each reference column's bin counts,
        but the column's own feature (a slice always "drifts" in its defining feature) and
        the statistics of its own entity (`drift.OWN_STATISTICS`)."""
        own = next((OWN_STATISTICS[k] for k, v in DRIFT_SLICES.items() if v == column), set())
        codes = {c: n for c, n in self.codes.items() if n != column and n not in own}
        if not codes:
            return {}
        frame = self.sql(
            f"SELECT g, feature, code, count(*) AS n FROM (UNPIVOT (SELECT {_q(column)} AS g, "
            f"{', '.join(codes)} FROM log WHERE day >= $s AND {_q(column)} IS NOT NULL) "
            f"ON {', '.join(codes)} INTO NAME feature VALUE code) GROUP BY ALL",
            {"s": since})
        out: dict[str, dict[str, np.ndarray]] = {}
        for (group, c), part in frame.groupby(["g", "feature"], sort=False):
            counts = np.zeros(ref.binnings[codes[c]].bins, np.int64)
            counts[part["code"].to_numpy(int)] = part["n"].to_numpy(np.int64)
            out.setdefault(str(group), {})[codes[c]] = counts
        return out

    def samples(self, since: date, column: str | None = None) -> dict[str, dict[str, int]]:
        """Distinct values of `drift.SAMPLE_KEYS` (shipments, carriers, lanes, customers) among
        the predictions from `since` on: {"overall": counts}, or per group of `column` (the
        independent observations a drift test stands on)."""
        if not self.raw:
            return {"overall": dict.fromkeys(SAMPLE_KEYS, 0)} if column is None else {}
        distinct = ", ".join(f"count(DISTINCT {_q(k)})" for k in SAMPLE_KEYS)
        if column is None:
            row = self.con.execute(f"SELECT {distinct} FROM log WHERE day >= $s",
                                   {"s": since}).fetchall()[0]
            return {"overall": dict(zip(SAMPLE_KEYS, map(int, row)))}
        rows = self.con.execute(
            f"SELECT {_q(column)}, {distinct} FROM log WHERE day >= $s AND "
            f"{_q(column)} IS NOT NULL GROUP BY 1", {"s": since}).fetchall()
        return {str(r[0]): dict(zip(SAMPLE_KEYS, map(int, r[1:]))) for r in rows}

    def judged(self) -> pd.DataFrame:
        """The judged predictions, what `monitoring.judge` reads: day, shipment_key (a number
        per shipment, from a hash of its id: which predictions share an outcome, without a
        million strings), the
        slices (pandas categoricals), stage, p, y, delay, q10/q50/q90, eta_err_h and lead_h."""
        if not self.raw:
            return pd.DataFrame()
        table = self.con.sql(
            f"SELECT day, hash(shipment_id) AS shipment_key, {', '.join(TEXT_SLICES)}, stage, "
            f"p_late AS p, "
            f"CAST(is_late AS DOUBLE) AS y, delay_hours AS delay, delay_p10_h AS q10, "
            f"delay_p50_h AS q50, delay_p90_h AS q90, abs(eta_s - delivered_s) / 3600 AS "
            f"eta_err_h, (delivered_s - instant_s) / 3600 AS lead_h FROM log WHERE {JUDGED}"
            ).to_arrow_table()
        columns = {}
        for name in table.column_names:
            column = table.column(name)
            if name in TEXT_SLICES:
                columns[name] = column.combine_chunks().dictionary_encode()
            else:
                columns[name] = column
        frame = pa.table(columns).to_pandas(date_as_object=False)
        frame["day"] = frame["day"].astype("datetime64[ns]")
        frame["shipment_key"] = pd.factorize(frame["shipment_key"])[0].astype(np.int32)
        stage = frame["stage"].to_numpy()
        # the stage's text, as `journey_stage(...).astype(str)` gives it ("nan": no stage)
        frame["stage"] = pd.Categorical(np.asarray([*STAGES, "nan"], dtype=object)[
            np.where(stage < 0, len(STAGES), stage)])
        return frame

    def outcomes_without_predictions(self, since: pd.Timestamp) -> int:
        """Deliveries from `since` to the cut-off of shipments no logged prediction names."""
        return int(self.con.execute(
            "SELECT count(*) FROM outcomes o WHERE delivered_at >= $s AND NOT EXISTS "
            "(SELECT 1 FROM log p WHERE p.shipment_id = o.shipment_id)",
            {"s": since.to_pydatetime()}).fetchall()[0][0])

    def close(self) -> None:
        self.con.close()

