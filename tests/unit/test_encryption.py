"""Encryption at rest: Parquet files round-trip through every reader, are unreadable without
their key (with an error that names the key file and what to do), survive a key rotation
unchanged, and are created owner-only."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from typing import ClassVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from shipdelay import crypto, parquet_io
from shipdelay.crypto import EncryptionKeyError
from shipdelay.keyring import KeyFile
from shipdelay.lake import write_parquet_atomic
from shipdelay.settings import Settings, get_settings


def _use(monkeypatch, *, on: bool = True, key_file=None, **more: str) -> None:
    monkeypatch.setenv("SHIPDELAY_ENCRYPTION", "true" if on else "false")
    if key_file is not None:
        monkeypatch.setenv("SHIPDELAY_ENCRYPTION_KEY_FILE", str(key_file))
    for name, value in more.items():
        monkeypatch.setenv(f"SHIPDELAY_{name.upper()}", value)
    get_settings.cache_clear()


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """Encryption on with a key file of the test's own; the settings cache is left clean."""
    path = tmp_path / "keys" / "master-keys.json"
    _use(monkeypatch, key_file=path)
    yield path
    get_settings.cache_clear()


def _table(n: int = 500) -> pa.Table:
    rng = np.random.default_rng(3)
    return pa.table({
        "shipment_id": [f"SHIPSECRET{i:06d}" for i in range(n)],
        "delay_hours": rng.normal(5, 3, n),
        "event_time": pa.array(np.arange(n) * 60_000_000, type=pa.timestamp("us", tz="UTC")),
    })


def test_round_trip_through_every_reader(keys, tmp_path):
    table = _table()
    path = write_parquet_atomic(table, tmp_path / "t" / "part-a.parquet")
    assert parquet_io.read_table(path).equals(table)
    assert parquet_io.dataset([path]).to_table().equals(table)
    pd.testing.assert_frame_equal(parquet_io.read_frame(path), table.to_pandas())
    with duckdb.connect() as con:
        got = con.execute(f"select count(*), sum(delay_hours) from "
                      f"{parquet_io.sql_source(con, str(tmp_path / 't' / '*.parquet'))} "
                      "where delay_hours > 5").fetchone()
    mask = table["delay_hours"].to_numpy() > 5
    assert got[0] == mask.sum() and got[1] == pytest.approx(table["delay_hours"].to_numpy()[mask].sum())


def test_the_bytes_on_disk_are_encrypted(keys, tmp_path, monkeypatch):
    table = _table()
    secret = write_parquet_atomic(table, tmp_path / "enc" / "part-a.parquet")
    _use(monkeypatch, on=False)
    plain = write_parquet_atomic(table, tmp_path / "plain" / "part-a.parquet")
    # the plaintext file shows column names and min/max statistics; the encrypted one does not
    for needle in (b"shipment_id", b"delay_hours", b"SHIPSECRET000000"):
        assert needle in plain.read_bytes()
        assert needle not in secret.read_bytes()
    with pytest.raises(OSError, match="encrypted"):
        pq.read_table(secret)
    with pytest.raises(OSError, match="encrypted"):
        pq.ParquetFile(secret)


def test_a_missing_key_file_is_one_clear_error(keys, tmp_path, monkeypatch):
    path = write_parquet_atomic(_table(), tmp_path / "t" / "part-a.parquet")
    elsewhere = tmp_path / "elsewhere" / "master-keys.json"
    _use(monkeypatch, key_file=elsewhere)
    for read in (lambda: parquet_io.read_table(path), lambda: parquet_io.dataset([path]),
                 lambda: parquet_io.read_frame(tmp_path / "t")):
        with pytest.raises(EncryptionKeyError) as err:
            read()
        said = str(err.value)
        assert str(elsewhere) in said and "SHIPDELAY_ENCRYPTION_KEY_FILE" in said
        assert "restore" in said and "\n" not in said
    assert not elsewhere.exists()  # reading never creates a key


def test_another_key_is_refused_naming_the_key_file(keys, tmp_path, monkeypatch):
    path = write_parquet_atomic(_table(), tmp_path / "t" / "part-a.parquet")
    other = tmp_path / "other" / "master-keys.json"
    KeyFile(other).ensure("shipdelay")  # same id and version, other key bytes
    _use(monkeypatch, key_file=other)
    with pytest.raises(EncryptionKeyError, match=f"{other}.*another v1 of master key 'shipdelay'"):
        parquet_io.read_table(path)
    with duckdb.connect() as con, pytest.raises(EncryptionKeyError):
        parquet_io.sql_source(con, [str(path)])


def test_encryption_off_reads_plaintext_and_names_the_setting_for_encrypted(keys, tmp_path,
                                                                            monkeypatch):
    secret = write_parquet_atomic(_table(), tmp_path / "t" / "part-a.parquet")
    _use(monkeypatch, on=False)
    plain = write_parquet_atomic(_table(), tmp_path / "t" / "part-b.parquet")
    assert pq.read_table(plain).num_rows == 500  # any reader reads it
    with pytest.raises(EncryptionKeyError, match="SHIPDELAY_ENCRYPTION=true"):
        parquet_io.read_table(secret)
    with duckdb.connect() as con:
        assert con.execute(f"select count(*) from {parquet_io.sql_source(con, [str(plain)])}"
                           ).fetchone()[0] == 500
    _use(monkeypatch, on=True)  # turned on later: the older plaintext files stay readable
    assert parquet_io.read_table(plain).num_rows == 500


def _version_named(path) -> int:
    """The master key version a file's wrapped keys name (the footer key's key material is
    stored beside the encrypted footer, in plaintext)."""
    raw = path.read_bytes()
    found = {v for v in range(1, 10) if f'"shipdelay:v{v}:'.encode() in raw}
    assert len(found) == 1, found
    return found.pop()


def test_rotation_keeps_old_files_readable_and_unchanged(keys, tmp_path):
    first = write_parquet_atomic(_table(100), tmp_path / "t" / "part-1.parquet")
    before = first.read_bytes()
    assert crypto.rotate() == 2
    second = write_parquet_atomic(_table(200), tmp_path / "t" / "part-2.parquet")
    assert first.read_bytes() == before  # history is not rewritten
    assert (_version_named(first), _version_named(second)) == (1, 2)
    assert parquet_io.read_table(first).num_rows == 100
    assert parquet_io.read_table(second).num_rows == 200
    assert parquet_io.read_frame(tmp_path / "t").shape[0] == 300
    versions = KeyFile(keys).versions()
    assert [(v.version, v.current) for v in versions] == [(1, False), (2, True)]


def test_rotation_in_another_process_is_used_by_a_running_writer(keys, tmp_path):
    write_parquet_atomic(_table(10), tmp_path / "t" / "part-1.parquet")
    out = subprocess.run([sys.executable, "-c", "from shipdelay.crypto import rotate; rotate()"],
                         env={**os.environ}, capture_output=True, text=True, check=True)
    assert out.returncode == 0
    late = write_parquet_atomic(_table(10), tmp_path / "t" / "part-2.parquet")
    assert _version_named(late) == 2


def test_key_file_and_parquet_files_are_owner_only(keys, tmp_path):
    old = os.umask(0o022)
    try:
        crypto.private_files()
        path = write_parquet_atomic(_table(), tmp_path / "lake" / "t" / "day=2025-01-01" / "p.parquet")
    finally:
        os.umask(old)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (path.parent, path.parent.parent, tmp_path / "lake"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_the_key_file_is_created_once_by_writers_starting_together(keys, tmp_path):
    code = ("import sys, pyarrow as pa; from shipdelay.lake import write_parquet_atomic; "
            "from pathlib import Path; write_parquet_atomic(pa.table({'a': [1]}), "
            "Path(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "t" / f"p{i}.parquet")])
             for i in range(4)]
    assert [p.wait() for p in procs] == [0] * 4
    assert len(KeyFile(keys).versions()) == 1
    assert parquet_io.read_frame(tmp_path / "t")["a"].tolist() == [1, 1, 1, 1]


def test_duckdb_scans_find_every_key_unwrapped_already(keys, tmp_path, monkeypatch):
    """Keys are unwrapped in the calling thread before DuckDB scans a decrypting dataset (the
    Python KMS called from Arrow's threads inside a DuckDB scan can wait forever for the
    interpreter lock), also for files another process wrote with its own key-encryption key."""
    import threading

    mine = write_parquet_atomic(_table(100), tmp_path / "t" / "part-1.parquet")
    code = ("import sys, pyarrow as pa; from shipdelay.lake import write_parquet_atomic; "
            "from pathlib import Path; write_parquet_atomic(pa.table({'shipment_id': ['x'], "
            "'delay_hours': [1.0], 'event_time': pa.array([0], pa.timestamp('us', tz='UTC'))}), "
            "Path(sys.argv[1]))")
    theirs = tmp_path / "t" / "part-2.parquet"
    subprocess.run([sys.executable, "-c", code, str(theirs)], check=True)
    crypto._factory.cache_clear()  # nothing unwrapped yet in this process
    calls: list[str] = []
    real = crypto.LocalKeyFileKms.unwrap_key

    def counted(self, wrapped, key_id):
        calls.append(threading.current_thread().name)
        return real(self, wrapped, key_id)

    monkeypatch.setattr(crypto.LocalKeyFileKms, "unwrap_key", counted)
    data = parquet_io.duckdb_dataset([mine, theirs])
    before = list(calls)
    assert len(before) >= 2 and set(before) == {threading.current_thread().name}
    with duckdb.connect() as con:
        con.register("t", data)
        assert con.execute("select count(*) from t").fetchone()[0] == 101
    assert calls == before  # none during the scan


class XorKms(pe.KmsClient):
    """A stand-in for a production KMS plugged in by class path (not a real cipher)."""

    wrapped: ClassVar[list[str]] = []

    def __init__(self, config):
        super().__init__()
        self.pad = config.key_access_token.encode() * 16

    def wrap_key(self, key_bytes, master_key_identifier):
        text = "xor:" + base64.b64encode(bytes(a ^ b for a, b in zip(key_bytes, self.pad))).decode()
        XorKms.wrapped.append(master_key_identifier)
        return text

    def unwrap_key(self, wrapped_key, master_key_identifier):
        raw = base64.b64decode(wrapped_key.split(":", 1)[1])
        return bytes(a ^ b for a, b in zip(raw, self.pad))


def test_a_kms_is_plugged_in_by_class_path(keys, tmp_path, monkeypatch):
    _use(monkeypatch, encryption_kms=f"{__name__}.XorKms", encryption_kms_token="tok3n",
         encryption_key_id="lake-key")
    path = write_parquet_atomic(_table(), tmp_path / "t" / "part-a.parquet")
    assert XorKms.wrapped[-1] == "lake-key" and not keys.exists()  # the local file is unused
    assert parquet_io.read_table(path).num_rows == 500
    with pytest.raises(EncryptionKeyError, match="rotate them there"):
        crypto.rotate()
    _use(monkeypatch, encryption_kms="no.such.Kms")
    with pytest.raises(EncryptionKeyError, match="SHIPDELAY_ENCRYPTION_KMS names 'no.such.Kms'"):
        write_parquet_atomic(_table(), tmp_path / "t" / "part-b.parquet")


def test_spark_is_refused_with_encryption_on(keys):
    pytest.importorskip("pyspark")
    from serving.batch_spark import spark_session

    with pytest.raises(EncryptionKeyError, match="Spark engine.*SHIPDELAY_ENCRYPTION=false"):
        spark_session()


def test_keys_commands(keys):
    from typer.testing import CliRunner

    from shipdelay.cli import app

    runner = CliRunner()
    assert "no key file yet" in runner.invoke(app, ["keys", "status"]).output
    assert runner.invoke(app, ["keys", "rotate"]).exit_code == 0
    assert runner.invoke(app, ["keys", "rotate"]).exit_code == 0
    shown = runner.invoke(app, ["keys", "status"]).output
    assert "v1" in shown and "v2" in shown and "new files" in shown
    assert base64.b64encode(KeyFile(keys).current("shipdelay")[1]).decode() not in shown


def test_no_secret_reaches_the_printed_settings(keys, monkeypatch):
    _use(monkeypatch, encryption_kms_token="kms-t0ken-secret")
    shown = str(get_settings().masked())
    assert "kms-t0ken-secret" not in shown and str(keys) in shown


def test_defaults_key_file_outside_the_lake(tmp_path):
    s = Settings(data_dir=tmp_path / "data", encryption_key_file=None)
    assert s.encryption and s.key_file == (tmp_path / "data" / "keys" / "master-keys.json")
    assert s.lake_dir not in s.key_file.parents
