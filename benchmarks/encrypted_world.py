"""The encrypted twin of a benchmark world, so that a benchmark measures the same world with
encryption at rest on and off.

The benchmarks run with encryption off (`run.py` sets SHIPDELAY_ENCRYPTION=false, so their rows
stay comparable with the rows before encryption existed) and build their worlds in plaintext.
`encrypted_twin` copies such a world and writes every Parquet file of it again through
`shipdelay.parquet_io` with encryption on and the twin's own key file (the lake, the offline
store, the scores), then applies the Feast definitions again so that every source points into
the twin. `encryption(on, key_file)` switches this process and the processes it starts.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

KEY_FILE = Path("keys") / "master-keys.json"


def _switch(on: bool, key_file: Path | None) -> None:
    from shipdelay.settings import get_settings

    os.environ["SHIPDELAY_ENCRYPTION"] = "true" if on else "false"
    if key_file is not None:
        os.environ["SHIPDELAY_ENCRYPTION_KEY_FILE"] = str(key_file)
    else:
        os.environ.pop("SHIPDELAY_ENCRYPTION_KEY_FILE", None)
    get_settings.cache_clear()


@contextmanager
def encryption(on: bool, key_file: Path | None = None):
    """Encryption at rest on or off for this process and the commands it starts (their
    environment is copied from this one), put back afterwards."""
    before = {k: os.environ.get(k) for k in ("SHIPDELAY_ENCRYPTION",
                                             "SHIPDELAY_ENCRYPTION_KEY_FILE")}
    _switch(on, key_file)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from shipdelay.settings import get_settings

        get_settings.cache_clear()


def encrypted_twin(source: Path, target: Path) -> tuple[Path, Path]:
    """(data folder, key file) of an encrypted copy of the plaintext world at `source`."""
    import pyarrow.parquet as pq

    from features.repo.definitions import definitions
    from features.store import get_store, offline_dir
    from shipdelay.parquet_io import write_table
    from shipdelay.settings import Settings

    if target.exists():
        shutil.rmtree(target)
    # the prediction log is what servers and batches write, not what they read: not copied
    shutil.copytree(source, target, symlinks=True,
                    ignore=shutil.ignore_patterns("logs", "compiled", "tmp", "predictions"))
    key_file = target / KEY_FILE
    with encryption(True, key_file):
        files = [p for p in target.rglob("*.parquet") if not p.is_symlink() and p.is_file()]
        for path in files:
            try:
                table = pq.ParquetFile(path).read()
            except OSError as err:  # e.g. a file written encrypted into the plaintext world
                raise RuntimeError(f"{path.relative_to(target)} in the plaintext world "
                                   f"{source} is not readable as plaintext ({err}); remove it "
                                   "or rebuild the world (SHIPDELAY_BENCH_REBUILD=1)") from err
            write_table(table, path, compression="zstd", coerce_timestamps="us",
                        allow_truncated_timestamps=True)
        settings = Settings(data_dir=target)
        get_store(settings).apply(definitions(offline_dir(settings)))  # sources in the twin
    return target, key_file
