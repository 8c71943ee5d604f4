"""Every Parquet file shipdelay writes or reads goes through here, so that encryption at rest
(`shipdelay.crypto`) is one decision in one place.

Writers: `write_table` (pyarrow), `write_options()` for pandas' `to_parquet`. Readers:
`read_table` / `read_frame` (pyarrow / pandas), `dataset` (an Arrow dataset), and `sql_source`
for DuckDB. DuckDB decrypts only files encrypted with a raw key it is handed, which cannot
unwrap the envelope-encrypted keys a KMS guards; so with encryption on, `sql_source` registers a
decrypting Arrow dataset on the connection (DuckDB pushes projections and filters into it) and
returns its name; with encryption off it returns DuckDB's own `read_parquet(...)`.

Tools that read Parquet with their own reader (Spark's, Feast's) cannot decrypt:
`refuse_foreign_reader` says so in one sentence.
"""

from __future__ import annotations

import glob
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from shipdelay.crypto import KEY_CACHE, EncryptionKeyError, active

Source = str | Path | list[str] | list[Path]


def write_options() -> dict:
    """Keyword arguments that make `pq.write_table` (or `DataFrame.to_parquet`) encrypt."""
    enc = active()
    return {"encryption_properties": enc.encryption_properties()} if enc else {}


def read_options() -> dict:
    """Keyword arguments that make `pq.read_table` (or `pd.read_parquet`) decrypt."""
    enc = active()
    return {"decryption_properties": enc.decryption_properties()} if enc else {}


def _explained(err: OSError, where) -> Exception:
    """pyarrow's error for an encrypted file read without keys, said in shipdelay's words."""
    if "encrypt" in str(err).lower() and active() is None:
        return EncryptionKeyError(
            f"{where} is encrypted and encryption is off in this process: set "
            "SHIPDELAY_ENCRYPTION=true and SHIPDELAY_ENCRYPTION_KEY_FILE to the key file it was "
            "written with")
    return err


def write_table(table: pa.Table, path: Path | str, **options) -> None:
    """`pq.write_table`, encrypted when encryption is on."""
    pq.write_table(table, path, **options, **write_options())


def read_table(source: Source, columns: list[str] | None = None, **options) -> pa.Table:
    """`pq.read_table` (a file or a Hive-partitioned folder), decrypting."""
    try:
        return pq.read_table(source, columns=columns, **options, **read_options())
    except OSError as err:
        raise _explained(err, source) from None


def read_frame(source: Source, columns: list[str] | None = None, **options) -> pd.DataFrame:
    """`pd.read_parquet`, decrypting (the same frame: pandas' own conversion)."""
    try:
        return pd.read_parquet(source, columns=columns, **options, **read_options())
    except OSError as err:
        raise _explained(err, source) from None


def file_format() -> ds.ParquetFileFormat | str:
    enc = active()
    return enc.file_format() if enc else "parquet"


def dataset(source: Source, **options) -> ds.Dataset:
    """`ds.dataset(source, format="parquet")`, decrypting what it reads."""
    if isinstance(source, (list, tuple)):
        source = [str(s) for s in source]
    try:
        return ds.dataset(source, format=file_format(), **options)
    except OSError as err:
        raise _explained(err, source) from None


def _quoted(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def paths(source: Source) -> list[str]:
    if isinstance(source, (list, tuple)):
        return [str(s) for s in source]
    text = str(source)
    if not glob.has_magic(text):
        return [text]
    files = sorted(glob.glob(text, recursive=True))
    if not files:
        raise FileNotFoundError(f"no Parquet files match {text}")
    return files


_WARMED: dict[tuple[int, str], float] = {}  # (factory, file) -> when its keys were unwrapped
_WARMED_LOCK = threading.Lock()


def _unwrap_keys_here(files: list[str]) -> None:
    """Read each file's (encrypted) footer in the calling thread, so that the KMS has unwrapped
    its key-encryption key into the factory's cache before DuckDB scans the dataset. Inside a
    DuckDB scan, Arrow calls the Python KMS from its own I/O threads while a DuckDB thread holds
    the interpreter lock and waits for Arrow: a deadlock. Files are read again once half the
    cache's lifetime has passed, so no scan ever finds a key expired."""
    enc = active()
    factory = id(enc.factory())
    fresh = time.monotonic() - KEY_CACHE.total_seconds() / 2
    with _WARMED_LOCK:
        todo = [f for f in files if _WARMED.get((factory, f), -1.0) < fresh]
        if not todo:
            return
        properties = enc.decryption_properties()
        for f in todo:
            try:
                pq.read_metadata(f, decryption_properties=properties)
            except OSError as err:
                raise _explained(err, f) from None
            _WARMED[(factory, f)] = time.monotonic()


def sql_source(con, source: Source, *, union_by_name: bool = False) -> str:
    """What to put after FROM in DuckDB SQL to read `source` (a file, a glob or a list of
    files) on connection `con`: DuckDB's `read_parquet` when encryption is off, else the name of
    a decrypting Arrow dataset registered on `con` (`union_by_name`: columns missing from some
    files read as NULL, as DuckDB's option of that name)."""
    if active() is None:
        if isinstance(source, (list, tuple)):
            listed = "[" + ", ".join(_quoted(str(s)) for s in source) + "]"
        else:
            listed = _quoted(str(source))
        return f"read_parquet({listed}{', union_by_name=true' if union_by_name else ''})"
    name = f"parquet_{uuid.uuid4().hex[:12]}"
    con.register(name, duckdb_dataset(paths(source), union_by_name=union_by_name))
    return name


def duckdb_dataset(files: list[str] | list[Path], *, union_by_name: bool = False) -> ds.Dataset:
    """A decrypting Arrow dataset over `files` that DuckDB (or ibis over DuckDB) may scan: the
    files' keys are unwrapped here first (see `_unwrap_keys_here`). Any dataset handed to
    DuckDB while encryption is on must come from here."""
    files = [str(f) for f in files]
    if active() is not None:
        _unwrap_keys_here(files)
    if union_by_name and len(files) > 1:
        schemas = [fragment.physical_schema for fragment in dataset(files).get_fragments()]
        return dataset(files, schema=pa.unify_schemas(schemas, promote_options="permissive"))
    return dataset(files)


def refuse_foreign_reader(reader: str) -> None:
    """Raise when encryption is on: `reader` reads Parquet with its own reader, which cannot
    unwrap keys a KMS guards."""
    if active() is not None:
        raise EncryptionKeyError(
            f"{reader} reads Parquet with its own reader, which cannot decrypt shipdelay's "
            "encrypted files: use the local engine, or run with SHIPDELAY_ENCRYPTION=false on "
            "data written without encryption")
