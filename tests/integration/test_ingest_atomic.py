"""A killed import is seen by readers entirely or not at all, and the next run cleans up.

Real `shipdelay ingest` processes are SIGKILLed midway: at a failpoint (the writer stops after
its N-th data file, or after its last one just before the commit, and waits to be killed), and
once without one, as soon as its first data file appears on disk. Readers in this process must
then see nothing of that import; a rerun must leave exactly one copy of every good row and of
every reject, and nothing of the killed run on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from shipdelay.ingest import ingest
from shipdelay.lake import Lake, open_lake
from shipdelay.lake_commits import COMMITS, FAILPOINT_ENV, PENDING, committed_ids, write_id

HEADER = ("event_id,shipment_id,parcel_id,event_time,ingested_at,event_type,hub_id,leg_index,"
          "latitude,longitude,note")
SHIPDELAY = Path(sys.executable).parent / "shipdelay"  # the installed command
BAD_ROWS = {4: "event_type", 9: "hub_id"}  # row number -> the field at fault


def _events_file(path: Path, days: int) -> list[str]:
    """One event per day (one lake file per day) and two bad rows; returns the good ids."""
    start = pd.Timestamp("2020-01-01", tz="UTC")
    lines, good = [HEADER], []
    for i in range(days):
        t = start + pd.Timedelta(days=i, hours=10)
        kind = "teleported" if i + 1 == 4 else "departed"
        hub = "NOWHERE" if i + 1 == 9 else "P-AAA"
        lines.append(f"E{i:05d},S1,S1-P01,{t:%Y-%m-%dT%H:%M:%SZ},"
                     f"{t + pd.Timedelta(minutes=9):%Y-%m-%dT%H:%M:%SZ},{kind},{hub},0,,,n{i}")
        if i + 1 not in BAD_ROWS:
            good.append(f"E{i:05d}")
    path.write_text("\n".join(lines) + "\n")
    return good


@pytest.fixture
def world(tmp_path):
    """A data dir whose lake knows hub P-AAA and shipment S1."""
    data = tmp_path / "data"
    lake = open_lake(data / "lake")
    (tmp_path / "hubs.csv").write_text("hub_id,name,kind,city,country,region,latitude,longitude\n"
                                       "P-AAA,Port A,seaport,A,NL,europe,51.9,4.1\n")
    (tmp_path / "ships.csv").write_text(
        "shipment_id,customer_id,origin_hub,destination_hub,service_level,weight_kg,volume_m3,"
        "parcel_count,booked_at,promised_at\n"
        "S1,C1,P-AAA,P-AAA,standard,1,1,1,2024-12-30T00:00:00Z,2025-12-30T00:00:00Z\n")
    assert ingest(tmp_path / "hubs.csv", "hubs", lake).accepted == 1
    assert ingest(tmp_path / "ships.csv", "shipments", lake).accepted == 1
    return tmp_path, data, lake


def _start(data: Path, csv: Path, failpoint: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAILPOINT_ENV}
    env["SHIPDELAY_DATA_DIR"] = str(data)
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return subprocess.Popen([str(SHIPDELAY), "ingest", str(csv), "--kind", "events"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for_failpoint(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()  # the writer prints one line when it stops there
    assert "failpoint" in line and "reached" in line, (line, proc.poll())


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _data_files(lake: Lake, table: str) -> list[Path]:
    return sorted((lake.root / table).rglob("part-*.parquet"))


def _sources(lake: Lake) -> set[str]:
    return set(lake.read("rejects")["source"]) if lake.exists("rejects") else set()


def _assert_rerun_imports_everything_once(tmp_path, data, lake, good):
    rerun = _start(data, tmp_path / "events.csv")
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    events = lake.read("tracking_events", columns=["event_id"])["event_id"]
    assert sorted(events) == good  # every good row, once
    rejects = lake.read("rejects")
    mine = rejects[rejects["source"] == "events.csv"]
    assert sorted(mine["row_number"]) == sorted(BAD_ROWS)  # every bad row, once
    for row, field in BAD_ROWS.items():
        assert field in mine.set_index("row_number").loc[row, "reason"]
    # nothing of the killed run is left: no pending marker, no file of an uncommitted write,
    # no temporary, no empty day folder
    assert not list((lake.root / PENDING).iterdir())
    committed = committed_ids(lake.root)
    for table in ("tracking_events", "rejects"):
        assert all(write_id(f) in committed for f in _data_files(lake, table))
        assert not list((lake.root / table).rglob(".*.tmp"))
        assert all(any(d.iterdir()) for d in (lake.root / table).glob("day=*"))


@pytest.mark.parametrize("failpoint", ["after-file:1", "after-file:5", "before-commit"])
def test_killed_import_is_invisible_and_the_rerun_completes_it_once(world, failpoint):
    tmp_path, data, lake = world
    good = _events_file(tmp_path / "events.csv", days=12)
    proc = _start(data, tmp_path / "events.csv", failpoint)
    try:
        _wait_for_failpoint(proc)
        # the killed writer has files in place, and readers see none of them
        written = len(_data_files(lake, "tracking_events")) + len(_data_files(lake, "rejects"))
        assert written == (len(good) + 1 if failpoint == "before-commit" else int(failpoint[-1]))
        assert not lake.exists("tracking_events") and "events.csv" not in _sources(lake)
    finally:
        _kill(proc)
    assert not lake.exists("tracking_events") and "events.csv" not in _sources(lake)
    assert list((lake.root / PENDING).iterdir())  # the dead writer's marker, for the next one
    _assert_rerun_imports_everything_once(tmp_path, data, lake, good)


def test_import_killed_when_its_first_file_appears_is_invisible(world):
    tmp_path, data, lake = world
    good = _events_file(tmp_path / "events.csv", days=1500)  # 1,500 files: time to kill it
    proc = _start(data, tmp_path / "events.csv")
    try:
        while not _data_files(lake, "tracking_events"):
            assert proc.poll() is None, "the import ended before its first file was seen"
            time.sleep(0.002)
    finally:
        _kill(proc)
    assert _data_files(lake, "tracking_events")  # the killed import did write something
    assert not lake.exists("tracking_events")
    assert "events.csv" not in _sources(lake)
    _assert_rerun_imports_everything_once(tmp_path, data, lake, good)


def test_killed_lake_rewrite_folder_is_removed_by_the_next_run(world):
    tmp_path, data, _ = world
    script = ("import pandas as pd, sys\n"
              "from shipdelay.lake import Lake\n"
              "t = pd.Timestamp('2025-01-02', tz='UTC')\n"
              "rows = pd.DataFrame({'shipment_id': ['a'], 'delivered_at': [t],\n"
              "    'promised_at': [t], 'delay_hours': [0.0], 'is_late': [False]})\n"
              "with Lake.rewrite(sys.argv[1]) as lake:\n"
              "    lake.append('outcomes', rows)\n")
    env = os.environ | {FAILPOINT_ENV: "after-file:1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(data / "lake")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    current = (data / "lake").resolve()
    try:
        _wait_for_failpoint(proc)
        building = [p for p in data.iterdir() if p.name.startswith("lake-") and p != current]
        assert len(building) == 1 and (building[0] / "outcomes").exists()
        open_lake(data / "lake")  # a live build is left alone
        assert building[0].exists()
    finally:
        _kill(proc)
    assert (data / "lake").resolve() == current and Lake(data / "lake").exists("hubs")
    again = _start(data, _write_one_event(tmp_path))
    assert again.wait(timeout=300) == 0
    assert not building[0].exists()  # the killed rewrite's folder is gone
    assert sorted(p.name for p in data.iterdir() if "lake" in p.name) == ["lake", current.name]
    assert (data / "lake").resolve() == current


def _write_one_event(tmp_path: Path) -> Path:
    path = tmp_path / "one.csv"
    path.write_text(HEADER + "\nX1,S1,S1-P01,2025-01-01T10:00:00Z,2025-01-01T10:05:00Z,"
                             "departed,P-AAA,0,,,\n")
    return path


def test_lake_without_a_commit_log_stays_readable_and_is_adopted(tmp_path):
    """A lake written before commit markers: every file is visible, and the first transaction
    keeps them visible while it starts the log."""
    lake = open_lake(tmp_path / "lake")
    t = pd.Timestamp("2025-01-02", tz="UTC")
    rows = pd.DataFrame({"shipment_id": ["a", "b"], "delivered_at": [t, t + pd.Timedelta(days=3)],
                         "promised_at": [t, t], "delay_hours": [0.0, 72.0],
                         "is_late": [False, True]})
    lake.append("outcomes", rows)
    import shutil
    shutil.rmtree(lake.root / COMMITS)  # as an older lake: files named part-<id>.parquet
    for f in _data_files(lake, "outcomes"):
        f.rename(f.with_name(f"part-{write_id(f)}.parquet"))
    assert sorted(lake.read("outcomes")["shipment_id"]) == ["a", "b"]
    lake.append("outcomes", rows.assign(shipment_id=["c", "d"]))
    assert sorted(lake.read("outcomes")["shipment_id"]) == ["a", "b", "c", "d"]
    assert len(committed_ids(lake.root)) == 2  # the adopted write and the new one
