"""`shipdelay simulate` at full size: wall time and peak memory of the console command.

Target (1M shipments, 365 days, 2 workers): <= 60 s and <= 6 GB. The command runs as a
subprocess of the installed console script with SHIPDELAY_DATA_DIR in a temporary directory
that is deleted afterwards, so the time includes interpreter start-up and imports, as a user
sees it.

Same-run reference: the tracking events the run produced are read back from its lake and
written again to one Parquet file with plain pyarrow (same zstd compression as the lake). That
is the I/O floor for the biggest table, on this disk, at this moment; `ratio` = simulate wall
time / reference write time, so a slow disk or a busy machine shows up in both numbers.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from harness import GB, VENV_BIN, check, measure_command, row, scratch_dir

from shipdelay.world.simulate import SimConfig

FULL = {"shipments": 1_000_000, "days": 365, "seed": 7, "workers": 2}
QUICK = {**FULL, "shipments": 50_000}
# the CLI keeps the default chunk size: below one chunk the pool is never started
CHUNK = SimConfig().chunk_size
TIME_TARGET_S = 60.0
MEMORY_TARGET_GB = 6.0
ROW_GROUP = 1 << 20
REFERENCE = "write the run's tracking events to one Parquet file (pyarrow, zstd)"


def command(params: dict) -> list[str]:
    return [str(VENV_BIN / "shipdelay"), "simulate", "--shipments", str(params["shipments"]),
            "--days", str(params["days"]), "--seed", str(params["seed"]),
            "--workers", str(params["workers"])]


def _files(lake: Path, table: str) -> list[str]:
    return sorted(str(p) for p in (lake / table).rglob("part-*.parquet"))


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def reference_write(lake: Path, out: Path) -> dict:
    """Stream the lake's tracking events into one Parquet file; time the writes only.

    Streaming in groups of about a million rows keeps memory flat at any size; read time is
    kept apart so the reference is the write floor.
    """
    dataset = ds.dataset(_files(lake, "tracking_events"), format="parquet")
    batches = dataset.to_batches()  # one or more per lake file: small, since files are per day
    rows, read_s, pending, pending_rows = 0, 0.0, [], 0
    t0 = time.perf_counter()
    writer = pq.ParquetWriter(out, dataset.schema, compression="zstd", coerce_timestamps="us",
                              allow_truncated_timestamps=True)
    write_s = time.perf_counter() - t0

    def flush() -> float:
        # gather small batches into ~1M-row groups, as one big write would lay them out
        t = time.perf_counter()
        writer.write_table(pa.Table.from_batches(pending, dataset.schema),
                           row_group_size=ROW_GROUP)
        pending.clear()
        return time.perf_counter() - t

    try:
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            read_s += time.perf_counter() - t0
            if batch is None:
                break
            pending.append(batch)
            rows += batch.num_rows
            pending_rows += batch.num_rows
            if pending_rows >= ROW_GROUP:
                write_s += flush()
                pending_rows = 0
        if pending:
            write_s += flush()
    finally:
        t0 = time.perf_counter()
        writer.close()  # writes the footer: part of the write
        write_s += time.perf_counter() - t0
    return {"rows": rows, "read_s": read_s, "write_s": write_s, "bytes": out.stat().st_size}


def run(quick: bool) -> list[dict]:
    params = QUICK if quick else FULL
    cmd = command(params)
    shown = f"SHIPDELAY_DATA_DIR=<tmp> {shlex.join(cmd)}"
    with scratch_dir("shipdelay-bench-simulate-") as tmp:
        data = tmp / "data"
        env = {**os.environ, "SHIPDELAY_DATA_DIR": str(data)}
        # cwd = the scratch dir, so a project .env cannot redirect the lake
        proc = measure_command(cmd, env=env, cwd=tmp)
        check(proc, cmd)
        lake = (data / "lake").resolve()
        lake_bytes = _dir_bytes(lake)
        ref = reference_write(lake, tmp / "reference_events.parquet")

    chunks = -(-params["shipments"] // CHUNK)
    facts = {**params, "chunks": chunks, "tracking_events": ref["rows"],
             "lake_bytes": lake_bytes, "cwd": "<tmp>"}
    if chunks < params["workers"]:
        facts["note"] = (f"{chunks} chunk(s) of {CHUNK:,}: fewer chunks than workers, so the "
                         "process pool is not used at this size")
    reference = {"name": REFERENCE, "value": round(ref["write_s"], 3), "unit": "s",
                 "ratio": round(proc.wall_s / ref["write_s"], 1) if ref["write_s"] else None}
    applies = params == FULL
    return [
        row("wall_time", round(proc.wall_s, 2), "s", target=("<=", TIME_TARGET_S),
            target_applies=applies, reference=reference, measured_command=shown, **facts),
        row("peak_memory", round(proc.peak_bytes / GB, 3), "GB", target=("<=", MEMORY_TARGET_GB),
            target_applies=applies, reference=None, measured_command=shown,
            method=proc.memory_method, samples=proc.samples,
            sampled_tree_peak_gb=round(proc.sampled_peak_bytes / GB, 3),
            largest_process_gb=round(proc.largest_process_bytes / GB, 3), **facts),
        row("throughput", round(params["shipments"] / proc.wall_s), "shipments/s",
            measured_command=shown, events_per_s=round(ref["rows"] / proc.wall_s), **facts),
        row("reference_write_time", round(ref["write_s"], 3), "s", measured_command=REFERENCE,
            rows=ref["rows"], read_s=round(ref["read_s"], 3), file_bytes=ref["bytes"],
            rows_per_s=round(ref["rows"] / ref["write_s"]) if ref["write_s"] else None),
    ]
