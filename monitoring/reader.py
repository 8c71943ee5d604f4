"""Reading the prediction log for monitoring: one day at a time, de-duplicated, joined to the
outcomes known at the cut-off. DuckDB does the join; memory stays bounded by one day's rows
(the monitor keeps only compact summaries of each day).

A prediction logged twice (same door, shipment, instant and model version: a stream batch
replayed after a crash, a batch run again) is kept once, the first written. Outcomes count
only when delivered at or before the cut-off: a later delivery was not known yet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from monitoring.prediction_log import KEY
from shipdelay.lake import Lake
from shipdelay.parquet_io import sql_source

_DAY = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")
OUTCOME_COLUMNS = ["delivered_at", "delay_hours", "is_late"]
MEMORY_LIMIT = "2GB"


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


class LogReader:
    """A DuckDB session over the log and the lake's outcomes as of one cut-off."""

    def __init__(self, log_root: Path, lake: Lake, as_of: pd.Timestamp):
        self.root, self.as_of = Path(log_root), as_of
        self.con = duckdb.connect()
        self.con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        self.con.execute("SET preserve_insertion_order = false")
        files = lake.files("outcomes")
        if files:
            source = sql_source(self.con, files)
            self.con.execute(
                f"CREATE TABLE outcomes AS SELECT shipment_id, "
                f"{', '.join(OUTCOME_COLUMNS)} FROM {source} WHERE delivered_at <= $t",
                {"t": as_of.to_pydatetime()})
        else:
            self.con.execute("CREATE TABLE outcomes (shipment_id VARCHAR, delivered_at "
                             "TIMESTAMPTZ, delay_hours DOUBLE, is_late BOOLEAN)")
        self.con.execute("CREATE TABLE predicted (shipment_id VARCHAR)")
        self.duplicates = 0

    def day(self, files: list[Path]) -> pd.DataFrame:
        """One day partition's predictions made at or before the cut-off, one row per key,
        with their outcome columns (NULL while not judged); the instant, the ETA and the
        delivery as epoch seconds (instant_s, eta_s, delivered_s)."""
        source = sql_source(self.con, files, union_by_name=True)
        key = ", ".join(KEY)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE today AS SELECT * FROM {source} WHERE instant <= $t",
            {"t": self.as_of.to_pydatetime()})
        raw = self.con.execute("SELECT count(*) FROM today").fetchone()[0]
        # times as epoch seconds: the monitor only subtracts them, and numbers convert to
        # pandas far faster than time zone aware timestamps
        frame = self.con.execute(
            f"SELECT p.* EXCLUDE (instant, eta, eta_p10, eta_p90, logged_at), "
            f"epoch(p.instant) AS instant_s, epoch(p.eta) AS eta_s, "
            f"epoch(o.delivered_at) AS delivered_s, o.delay_hours, o.is_late FROM "
            f"(SELECT * FROM today QUALIFY row_number() OVER (PARTITION BY {key} "
            f"ORDER BY logged_at) = 1) p LEFT JOIN outcomes o USING (shipment_id)").df()
        self.duplicates += raw - len(frame)
        self.con.execute("INSERT INTO predicted SELECT DISTINCT shipment_id FROM today")
        self.con.execute("DROP TABLE today")
        return frame

    def days(self, start: date, end: date) -> Iterator[tuple[date, pd.DataFrame]]:
        """Each day from `start` to `end` with its frame (empty days give an empty frame)."""
        files = log_days(self.root)
        for day in pd.date_range(start, end, freq="D").date:
            yield day, (self.day(files[day]) if day in files else pd.DataFrame())

    def outcomes_without_predictions(self, since: pd.Timestamp) -> int:
        """Deliveries from `since` to the cut-off of shipments no logged prediction names."""
        return int(self.con.execute(
            "SELECT count(*) FROM outcomes o WHERE delivered_at >= $s AND NOT EXISTS "
            "(SELECT 1 FROM predicted p WHERE p.shipment_id = o.shipment_id)",
            {"s": since.to_pydatetime()}).fetchone()[0])

    def close(self) -> None:
        self.con.close()
