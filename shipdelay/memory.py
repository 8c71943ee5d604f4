"""The memory budget of the offline jobs (feature build, training sets, the nightly batch's join).

One number, `Settings.memory_budget_gb` (default: half the machine, or half the container's
limit when that is smaller), bounds what one job may hold. DuckDB gets a share of it as its
`memory_limit` and spills beyond that to `<data_dir>/tmp/duckdb`; the jobs size their chunks
from the rest, so a lake larger than memory streams through instead of failing.
"""

from __future__ import annotations

import os
from pathlib import Path

GB = 2**30
DUCKDB_SHARE = 0.5  # of the budget for DuckDB; the job's own frames live in the other half
DUCKDB_FLOOR_MB = 128  # below this DuckDB cannot run the joins at all
_CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")


def machine_memory_bytes() -> int:
    """Physical memory this process may use: the machine's, or its container's limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = _CGROUP_LIMIT.read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def default_budget_gb() -> float:
    """Half the machine, in GB rounded down to a tenth."""
    return max(0.1, int(machine_memory_bytes() / 2 / GB * 10) / 10)


def duckdb_limit_mb(budget_gb: float, share: float = DUCKDB_SHARE) -> int:
    """DuckDB's memory_limit, in MB, for a job with this budget (`share` of it)."""
    return max(DUCKDB_FLOOR_MB, int(budget_gb * share * 1024))


def spill_dir(data_dir: Path) -> Path:
    """Where DuckDB writes what does not fit in its limit: under the data folder, never /tmp."""
    return data_dir / "tmp" / "duckdb"


def offline_connection(budget_gb: float | None = None, data_dir: Path | None = None,
                       share: float = DUCKDB_SHARE):
    """A private in-memory DuckDB connection bound by `share` of the memory budget (default:
    the settings'), spilling under `data_dir` (default: the settings' data folder). Its tables
    spill too: a table larger than the limit lives in the spill folder, and reading a range of
    it brings back only that range's blocks."""
    import duckdb

    return limit_connection(duckdb.connect(), budget_gb, data_dir, share)


def limit_connection(con, budget_gb: float | None = None, data_dir: Path | None = None,
                     share: float = DUCKDB_SHARE):
    """Set the memory budget's limit (`share` of it) and spill folder on an open DuckDB
    connection (e.g. the one ibis opens for Feast's offline store); returns it."""
    if budget_gb is None or data_dir is None:
        from shipdelay.settings import get_settings

        settings = get_settings()
        budget_gb = settings.memory_budget_gb if budget_gb is None else budget_gb
        data_dir = settings.data_dir if data_dir is None else data_dir
    con.execute(f"SET memory_limit = '{duckdb_limit_mb(budget_gb, share)}MB'")
    folder = spill_dir(Path(data_dir).absolute())
    try:  # DuckDB makes the last folder itself, on its first spill, but not its parents
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # a read-only data folder: the connection works until it has to spill
    folder = str(folder).replace("'", "''")
    con.execute(f"SET temp_directory = '{folder}'")
    return con
