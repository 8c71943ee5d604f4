"""Encryption at rest end to end: the same small world run through the command line twice, once
encrypted (the default) and once with encryption off. The encrypted files on disk cannot be read
without their keys, and decrypted they hold exactly what the plaintext run wrote; every file the
product made is its owner's only, no key leaks into another file; the champion trained on the
encrypted world scores both worlds alike (training itself is not bit-reproducible from run to
run, so the plaintext run borrows that champion through its MLflow tracking URI); and a command
without the key fails with one sentence naming the key file."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.schema import VIEWS
from shipdelay.crypto import Encryption
from shipdelay.keyring import KeyFile

ROOT = Path(__file__).resolve().parents[2]
SHIPDELAY = ROOT / ".venv" / "bin" / "shipdelay"
WORLD = ["--shipments", "2500", "--start", "2025-05-01", "--days", "200", "--seed", "5",
         "--ceiling-shipments", "100", "--ceiling-draws", "20", "--workers", "1"]
STEPS = {"encrypted": [["simulate", *WORLD], ["features", "build"], ["train"], ["promote"],
                       ["score-batch"]],
         "plain": [["simulate", *WORLD], ["features", "build"], ["score-batch"]]}


def _env(data: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPDELAY_")}
    return {**env, "SHIPDELAY_DATA_DIR": str(data), "SHIPDELAY_PROFILE": "local",
            "SHIPDELAY_ONLINE_STORE": "sqlite", "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore", **more}


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SHIPDELAY), *args], check=False, env=env, cwd=ROOT,
                          capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    """The data folders of the two runs (the encrypted one keeps its key file by default, in
    <data>/keys)."""
    root = tmp_path_factory.mktemp("encrypted-lake")
    out = {}
    registry = f"sqlite:///{root / 'encrypted' / 'data' / 'mlflow.db'}"  # the one champion
    for name, flag in (("encrypted", "true"), ("plain", "false")):
        data = root / name / "data"
        env = _env(data, SHIPDELAY_ENCRYPTION=flag, SHIPDELAY_MLFLOW_TRACKING_URI=registry)
        for step in STEPS[name]:
            done = _run(env, *step)
            assert done.returncode == 0, f"{name} {step}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        out[name] = data
    return out


def _parquet(data: Path) -> dict[str, Path]:
    """Every Parquet file of the lake, the offline store and the published scores, by path
    relative to the data folder."""
    found = {}
    for top, pattern in (("lake", "**/*.parquet"), ("feast/offline", "**/*.parquet"),
                         ("scores", "run_date=*/*.parquet")):
        base = (data / top).resolve()
        for path in base.glob(pattern):
            if "/." not in str(path) and "/_" not in str(path.relative_to(base)):
                found[f"{top}/{path.relative_to(base)}"] = path
    return found


def _scores(data: Path, props=None):
    files = sorted((data / "scores").glob("run_date=*/part-*.parquet"))
    assert files
    tables = [pq.ParquetFile(f, decryption_properties=props).read() for f in files]
    frame = pa.concat_tables(tables).to_pandas()
    return frame.sort_values("shipment_id", ignore_index=True)


def test_every_parquet_file_is_encrypted(worlds):
    secret, plain = _parquet(worlds["encrypted"]), _parquet(worlds["plain"])
    folders = {str(Path(name).parent) for name in secret}
    assert len(secret) > 100 and folders == {str(Path(name).parent) for name in plain}
    for path in secret.values():
        with pytest.raises(OSError, match="encrypted"):
            pq.ParquetFile(path)
    # a column name is in the plaintext footer of every file that has the column, and in no
    # encrypted file (file names differ between runs: files are compared folder by folder)
    named = {str(Path(name).parent) for name, path in plain.items()
             if b"shipment_id" in path.read_bytes()}
    assert len(named) > 50
    for name, path in secret.items():
        if str(Path(name).parent) in named:
            assert b"shipment_id" not in path.read_bytes(), name


def _table(data: Path, folder: str, props=None) -> pd.DataFrame:
    """All rows of one table folder (lake table or offline view), in a fixed order."""
    base = data / folder
    files = sorted(p for p in base.resolve().rglob("part-*.parquet") if "/." not in str(p))
    table = pa.concat_tables([pq.ParquetFile(f, decryption_properties=props).read()
                              for f in files], promote_options="permissive")
    flat = [f.name for f in table.schema if not pa.types.is_list(f.type)]
    # without pandas' stored dtypes: a list column written from pandas keeps the dtype name
    # "list<item: double>[pyarrow]", which pandas cannot read back (both sides convert alike)
    frame = table.to_pandas(ignore_metadata=True)
    return frame.sort_values(sorted(flat)).reset_index(drop=True)


def test_decrypted_tables_equal_the_plaintext_run(worlds):
    props = Encryption(worlds["encrypted"] / "keys" / "master-keys.json").decryption_properties()
    folders = ["lake/shipments", "lake/legs", "lake/tracking_events", "lake/outcomes",
               "lake/rejects", *(f"feast/offline/{v}" for v in VIEWS)]
    for folder in folders:
        plain = _table(worlds["plain"], folder)
        secret = _table(worlds["encrypted"], folder, props)
        assert len(plain) > 0 or folder.endswith("hub_weather"), folder
        pd.testing.assert_frame_equal(secret[plain.columns], plain, obj=folder)


def test_the_scores_equal_the_plaintext_run(worlds):
    key_file = worlds["encrypted"] / "keys" / "master-keys.json"
    a = _scores(worlds["encrypted"], Encryption(key_file).decryption_properties())
    b = _scores(worlds["plain"])
    assert len(a) == len(b) > 50
    assert a["shipment_id"].tolist() == b["shipment_id"].tolist()
    assert (a["p_late"] - b["p_late"]).abs().max() == 0
    assert a["risk_band"].tolist() == b["risk_band"].tolist()
    assert a["reasons"].map(list).tolist() == b["reasons"].map(list).tolist()
    for col in ("delay_p50_h", "delay_p90_h", "eta", "eta_p10", "eta_p90"):
        assert a[col].tolist() == b[col].tolist(), col


def test_the_product_makes_owner_only_files_and_keeps_keys_in_the_key_file(worlds):
    data = worlds["encrypted"]
    keys = KeyFile(data / "keys" / "master-keys.json")
    master = keys.current("shipdelay")[1]
    needles = (master, base64.b64encode(master))
    seen = 0
    for path in [data, *data.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
        if path.is_file() and path != keys.path:
            raw = path.read_bytes()
            assert not any(n in raw for n in needles), f"{path} holds the master key"
            seen += 1
    # the MLflow database and the SQLite online store are among them (not encrypted: the data
    # folder belongs on an encrypted volume), and hold no key
    assert (data / "mlflow.db").is_file() and (data / "feast" / "online.db").is_file()
    assert seen > 100


def test_without_the_key_a_command_says_which_key_file_and_what_to_do(worlds, tmp_path):
    data = worlds["encrypted"]
    missing = tmp_path / "gone" / "master-keys.json"
    done = _run(_env(data, SHIPDELAY_ENCRYPTION_KEY_FILE=str(missing)), "score-batch")
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert str(missing) in " ".join(said.split()) and "SHIPDELAY_ENCRYPTION_KEY_FILE" in said
    assert "Traceback" not in said
    off = _run(_env(data, SHIPDELAY_ENCRYPTION="false"), "score-batch")
    said = off.stdout + off.stderr
    assert off.returncode == 1 and "SHIPDELAY_ENCRYPTION=true" in said and "Traceback" not in said
