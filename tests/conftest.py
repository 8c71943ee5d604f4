"""Shared fixtures: small simulated worlds, built once per test session in a temporary folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest

from shipdelay.lake import Lake
from shipdelay.world.simulate import SimConfig, SimSummary, simulate

SMALL = SimConfig(shipments=3_000, start="2025-10-01", days=60, seed=11, ceiling_shipments=150,
                  ceiling_draws=40, chunk_size=1_000)
MEDIUM = SimConfig(shipments=20_000, start="2025-10-01", days=180, seed=7, ceiling_shipments=1_500,
                   ceiling_draws=100)


def pytest_configure(config) -> None:
    """One key file for the session's encrypted Parquet files (encryption is per process, see
    shipdelay.crypto), inherited by every process a test starts, whatever its data folder."""
    if "SHIPDELAY_ENCRYPTION_KEY_FILE" not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="shipdelay-keys-"))
        os.environ["SHIPDELAY_ENCRYPTION_KEY_FILE"] = str(folder / "master-keys.json")
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


# The files that take longest (their worlds, servers and command-line runs included), longest
# first. `make test` hands whole files to its workers in collection order
# (--no-loadscope-reorder; xdist's default deals the files with fewest tests last, and those are
# these), so these start first and the many short files fill the gaps after them: a long file
# dealt out last would leave the other worker idle until it ends.
LONGEST_FILES = (
    "tests/integration/test_service.py",  # first: its worker builds `trained` for all
    "tests/integration/test_encrypted_lake.py",  # while another runs a world of its own
    "tests/model/test_ceiling_bound.py",
    "tests/integration/test_mlproject.py",
    "tests/integration/test_service_hardening.py",
    "tests/integration/test_batch_spark.py",
    "tests/integration/test_bento_build.py",
    "tests/integration/test_notebook_aliases.py",
    "tests/integration/stream/test_stream_kill_sqlite.py",
    "tests/integration/stream/test_stream_kill_redis.py",
    "tests/integration/stream/test_stream_fuzz.py",
    "tests/integration/stream/test_stream_group.py",
    "tests/integration/test_parity.py",
    "tests/model/test_ceiling.py",
    "tests/model/test_ceiling_shapes.py",
    "tests/integration/test_monitor_doors.py",
    "tests/integration/test_monitor_stream.py",
    "tests/integration/test_nightly.py",
    "tests/integration/test_ask.py",
    "tests/model/test_tune.py",
    "tests/model/test_tune_params.py",
    "tests/integration/test_postgres_backends.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    """The files of LONGEST_FILES first, in that order; every other file keeps its place."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    # stable: tests keep their order within a file, the other files theirs
    items[:] = sorted(items, key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def assert_serve_option_refused(monkeypatch, name: str, values) -> None:
    """`ServeOptions.from_env` refuses each of `values` in environment variable `name`, with a
    message that names it."""
    from serving.options import ServeOptions

    for bad in values:
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            ServeOptions.from_env()


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> tuple[Lake, SimSummary]:
    link = tmp_path_factory.mktemp("small") / "lake"
    summary = simulate(SMALL, link)
    return Lake(link), summary


@pytest.fixture(scope="session")
def medium_world(tmp_path_factory) -> tuple[Lake, SimSummary]:
    link = tmp_path_factory.mktemp("medium") / "lake"
    summary = simulate(MEDIUM, link, workers=1)
    return Lake(link), summary


def services_required() -> bool:
    """In CI a missing Redis or PostgreSQL is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def redis_or_skip(db: int, flush: bool = True):
    """A client of the local Redis database `db` (emptied unless `flush` is False); a skip
    without Redis, a failure in CI."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=2)
    try:
        client.flushdb() if flush else client.ping()
    except redis.exceptions.ConnectionError:
        if services_required():
            pytest.fail("Redis at 127.0.0.1:6379 is required in CI and is not reachable")
        pytest.skip("no Redis at 127.0.0.1:6379")
    return client


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    """A fresh SHIPDELAY_DATA_DIR for code that reads Settings."""
    from shipdelay.settings import get_settings

    monkeypatch.setenv("SHIPDELAY_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


TRAINING = SimConfig(shipments=5_000, start="2025-05-01", days=240, seed=5, ceiling_shipments=300,
                     ceiling_draws=50, chunk_size=5_000)


def _build_trained(root: Path):
    """The trained world under `root`/data: simulate, `features build`, train and register."""
    from features.build import build_features
    from shipdelay.settings import Settings
    from training.train import current_split, train

    settings = Settings(data_dir=root / "data")
    simulate(TRAINING, settings.lake_dir)
    build_features(settings)
    split = current_split(settings)
    report = train(settings, split=split, challenger=True)
    return settings, split, report


@contextlib.contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive lock on the file `lock` (the other test workers wait for it)."""
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# kept in the build and linked from each worker's copy: read-only for every test (a test that
# changes a lake or an offline store copies the world first); MLflow's artifacts stay where the
# build's registry points, and new runs add their own folders there
SHARED_PARTS = ("lake", "mlartifacts", "feast/offline")


def _worker_copy(build: Path, root: Path):
    """A data folder of its own under `root` for this worker: the registry, the Feast registry,
    the online store, the model caches and the monitoring references copied, the rest linked."""
    from shipdelay.settings import Settings

    for item in [*build.iterdir(), *(build / "feast").iterdir()]:
        name = str(item.relative_to(build))
        if name == "feast" or name.startswith("lake-"):
            continue
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in SHARED_PARTS:
            target.symlink_to(item.resolve())
        elif item.is_dir():
            shutil.copytree(item, target, symlinks=True)
        else:
            shutil.copy2(item, target)
    return Settings(data_dir=root)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small world with its feature store, one trained and registered model, as the CLI does.

    Under xdist the first worker that asks builds it once for the run and every worker gets
    its own copy of what tests change (registries, online store); alone, it is built here."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return _build_trained(tmp_path_factory.mktemp("trained"))
    run = tmp_path_factory.getbasetemp().parent  # this run's folder, shared by its workers
    build, done = run / "trained-build", run / "trained-build.pickle"
    with _exclusive(run / "trained-build.lock"):
        if not done.exists():
            shutil.rmtree(build, ignore_errors=True)  # a worker that failed half-way
            _, split, report = _build_trained(build)
            done.write_bytes(pickle.dumps((split, report)))
    split, report = pickle.loads(done.read_bytes())
    settings = _worker_copy(build / "data", tmp_path_factory.mktemp("trained") / "data")
    from registry.store import activate

    activate(settings)  # MLflow's process-wide URIs on this copy, as a build here would leave them
    return settings, split, report


@pytest.fixture
def reasons_calls(monkeypatch):
    """`reasons_calls(scorer)` counts the rows each of that scorer's TreeSHAP calls explains
    (the returned list grows by one entry a call) until the test ends."""

    def watch(scorer) -> list[int]:
        calls, real = [], scorer._reasons

        def counted(X, some):
            calls.append(len(X))
            return real(X, some)

        monkeypatch.setattr(scorer, "_reasons", counted)
        return calls

    return watch


@pytest.fixture(scope="module", autouse=True)
def _one_service_app_per_module():
    """BentoML registers its request metrics in prometheus_client's default registry when it
    builds an ASGI app, once per process; with test files sharing a worker process, a second
    module's app would find them taken. Each module starts without them."""
    from prometheus_client import REGISTRY

    for collector, names in list(REGISTRY._collector_to_names.items()):
        if any(name.startswith("bentoml_") for name in names):
            REGISTRY.unregister(collector)
    yield
