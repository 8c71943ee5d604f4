"""Compiled boosters answer as LightGBM does, are compiled once per model text and verified
before they are loaded, leave explanations to LightGBM, and never stop a model from serving:
the model serves with LightGBM while its trees compile in processes that never outlive it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from registry.loader import MODEL_NAME, bundle_folder, client, compiled_hashes
from serving import compile_job, compiled_trees
from serving.compiled_trees import CompiledBooster, MemoryLedger, RegistryLedger, compile_bundle
from serving.scorer import Scorer
from shipdelay.settings import Settings
from training.bundle import Bundle


def _bundle(trained) -> Bundle:
    settings, _, report = trained
    c = client(settings)
    mv = c.get_model_version(MODEL_NAME, str(report.version))
    return Bundle.load(bundle_folder(settings, c, mv), version=str(mv.version))


@pytest.fixture(scope="module")
def rows(trained):
    _, split, _ = trained
    scorer = Scorer(_bundle(trained))
    rows = split.test.sample(min(400, len(split.test)), random_state=11).reset_index(drop=True)
    rows = rows[["shipment_id", *scorer.inputs]].copy()
    rows["request_time_s"] = pd.Timestamp("2025-06-01", tz="UTC").timestamp()
    for c in scorer.bundle.spec.categories:  # as the online reader gives them
        rows[c] = rows[c].astype(object).where(rows[c].notna(), None)
    return rows


def _objects(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.o"))


def _no_compiling(monkeypatch) -> None:
    def refuse(*_):
        raise AssertionError("compiled again")

    monkeypatch.setattr(compile_job, "worker_command", refuse)


def _gated(gate: Path):
    """A worker command that holds every compile process, alive and attached to its parent
    as the real one is, until `gate` exists, then runs the real compile."""
    code = ("import os, sys, time, runpy; from serving.compile_worker import exit_with_parent; "
            "exit_with_parent(); gate = sys.argv.pop(1)\n"
            "while not os.path.exists(gate): time.sleep(0.05)\n"
            "runpy.run_module('serving.compile_worker', run_name='__main__')")

    def command(model_file, object_file):
        return [sys.executable, "-c", code, str(gate), str(model_file), str(object_file)]

    return command


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _running_compiles(seconds: float = 60.0) -> list[int]:
    """The compile processes' ids once as many run as may at once (they start in a thread)."""
    deadline = time.monotonic() + seconds
    while len(compile_job.live_pids()) < compile_job.parallelism(4):
        assert time.monotonic() < deadline, "the compile processes did not start"
        time.sleep(0.05)
    return compile_job.live_pids()


def _wait_gone(pids: list[int], seconds: float = 30.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not _gone(p)]


# ------------------------------------------------------------------------ the compiled trees
def test_compiled_scores_equal_lightgbm(trained, rows, tmp_path):
    plain = Scorer(_bundle(trained))
    fast_bundle = _bundle(trained)
    assert compile_bundle(fast_bundle, tmp_path) == []
    assert isinstance(fast_bundle.classifier, CompiledBooster)
    assert all(isinstance(b, CompiledBooster) for b in fast_bundle.quantiles.values())
    fast = Scorer(fast_bundle)
    X = plain.matrix(rows)
    assert np.isnan(X).any()  # missing values and unseen categories take the default branches
    np.testing.assert_allclose(fast_bundle.classifier.predict(X),
                               plain.bundle.classifier.predict(X), rtol=0, atol=1e-12)
    for q, booster in plain.bundle.quantiles.items():
        np.testing.assert_allclose(fast_bundle.quantiles[q].predict(X), booster.predict(X),
                                   rtol=0, atol=1e-9)
    a, b = plain.score(rows), fast.score(rows)
    np.testing.assert_allclose(b["p_late"], a["p_late"], rtol=0, atol=1e-12)
    assert (b["risk_band"] == a["risk_band"]).all()
    assert (b["reasons"] == a["reasons"]).all()  # explanations stay LightGBM's TreeSHAP
    gap = (b["eta"] - a["eta"]).abs().max()
    assert gap <= pd.Timedelta(microseconds=1), gap


def test_contributions_and_raw_scores_come_from_lightgbm(trained, rows, tmp_path):
    bundle = _bundle(trained)
    compile_bundle(bundle, tmp_path)
    X = Scorer(bundle).matrix(rows.head(5))
    inner = bundle.classifier.booster
    np.testing.assert_array_equal(bundle.classifier.predict(X, pred_contrib=True),
                                  inner.predict(X, pred_contrib=True))
    np.testing.assert_array_equal(bundle.classifier.predict(X, raw_score=True),
                                  inner.predict(X, raw_score=True))
    assert bundle.classifier.num_feature() == inner.num_feature()  # the rest is the booster's


def test_each_model_text_is_compiled_once_and_kept_private(trained, tmp_path, monkeypatch):
    ledger = MemoryLedger()
    first = _bundle(trained)
    assert compile_bundle(first, tmp_path, ledger) == []
    objects = _objects(tmp_path)
    assert len(objects) == 4 and all(o.stat().st_size > 0 for o in objects)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    assert {stat.S_IMODE(o.stat().st_mode) for o in objects} == {0o600}
    assert sorted(ledger.digests.values()) == sorted(
        hashlib.sha256(o.read_bytes()).hexdigest() for o in objects)
    stamps = [o.stat().st_mtime_ns for o in objects]

    with monkeypatch.context() as m:
        _no_compiling(m)
        again = _bundle(trained)
        assert compile_bundle(again, tmp_path, ledger) == []
    assert [o.stat().st_mtime_ns for o in _objects(tmp_path)] == stamps
    X = np.zeros((3, again.classifier.num_feature()))
    np.testing.assert_allclose(again.classifier.predict(X), first.classifier.predict(X))

    # files nobody recorded (a new process without the digests) are not trusted
    before = compiled_trees.counts["unrecorded"]
    assert compile_bundle(_bundle(trained), tmp_path, MemoryLedger()) == []
    assert compiled_trees.counts["unrecorded"] == before + 4


def test_a_tampered_object_is_not_loaded(trained, rows, tmp_path, monkeypatch, caplog):
    ledger = MemoryLedger()
    assert compile_bundle(_bundle(trained), tmp_path, ledger) == []
    victim = _objects(tmp_path)[0]
    good = victim.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # one byte flipped inside the code
    victim.write_bytes(bytes(bad))

    loaded, real = [], compiled_trees.NativeForest

    class Watched(real):
        def __init__(self, data, n_features):
            loaded.append(hashlib.sha256(data).hexdigest())
            super().__init__(data, n_features)

    monkeypatch.setattr(compiled_trees, "NativeForest", Watched)
    started, real_command = [], compile_job.worker_command
    monkeypatch.setattr(compile_job, "worker_command",
                        lambda *a: started.append(a) or real_command(*a))
    rejected = compiled_trees.counts["rejected"]
    bundle = _bundle(trained)
    with caplog.at_level(logging.WARNING, logger="serving.compiled_trees"):
        assert compile_bundle(bundle, tmp_path, ledger) == []
    assert hashlib.sha256(bytes(bad)).hexdigest() not in loaded and len(loaded) == 4
    assert len(started) == 1  # that one booster compiled again, the three others reused
    assert compiled_trees.counts["rejected"] == rejected + 1
    assert victim.name in caplog.text and "does not match" in caplog.text
    assert victim.read_bytes() == good  # replaced by the recompiled object
    plain = Scorer(_bundle(trained))
    np.testing.assert_allclose(Scorer(bundle).score(rows)["p_late"], plain.score(rows)["p_late"],
                               rtol=0, atol=1e-12)


def test_the_registry_records_the_digests(trained, tmp_path, monkeypatch):
    settings, _, report = trained
    version = str(report.version)
    assert compile_bundle(_bundle(trained), tmp_path, RegistryLedger(settings, version)) == []
    recorded = compiled_hashes(settings, version)
    tags = client(settings).get_model_version(MODEL_NAME, version).tags
    key = compiled_trees.machine_key()
    assert {f"{n}.{key}" for n in ("classifier", "delay_q10", "delay_q50", "delay_q90")} <= set(
        recorded)
    assert all(tags[f"compiled_sha256.{k}"] == v for k, v in recorded.items())
    assert sorted(recorded[k] for k in recorded if k.endswith(key)) == sorted(
        hashlib.sha256(o.read_bytes()).hexdigest() for o in _objects(tmp_path))
    with monkeypatch.context() as m:  # a new process: the registry's digests vouch for the files
        _no_compiling(m)
        bundle = _bundle(trained)
        assert compile_bundle(bundle, tmp_path, RegistryLedger(settings, version)) == []
        victim = compiled_trees.object_path(tmp_path, bundle.quantiles[0.9].model_to_string())
        data = victim.read_bytes()
        victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # the last byte flipped
        assert compile_bundle(_bundle(trained), tmp_path,
                              RegistryLedger(settings, version)) == ["delay_q90"]


def test_a_dead_compile_process_leaves_lightgbm(trained, tmp_path, monkeypatch, caplog):
    bundle = _bundle(trained)
    original = bundle.quantiles[0.5]
    text, real = original.model_to_string(), compile_job.worker_command

    def dies(model_file, object_file):
        if Path(model_file).read_text() == text:
            return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), 9)"]
        return real(model_file, object_file)

    monkeypatch.setattr(compile_job, "worker_command", dies)
    with caplog.at_level(logging.WARNING, logger="serving.compiled_trees"):
        assert compile_bundle(bundle, tmp_path) == ["delay_q50"]
    assert bundle.quantiles[0.5] is original
    assert isinstance(bundle.classifier, CompiledBooster)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "delay_q50" in lines[0] and "SIGKILL" in lines[0], lines


@pytest.mark.parametrize("value, mode", [(None, "background"), ("1", "background"),
                                         ("wait", "wait"), ("0", "off"), ("off", "off")])
def test_the_switch(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv(compiled_trees.ENV, raising=False)
    else:
        monkeypatch.setenv(compiled_trees.ENV, value)
    assert compiled_trees.mode() == mode and compiled_trees.enabled() is (mode != "off")


def test_the_cache_keeps_the_newest_objects(trained, tmp_path):
    old = []
    for k in range(compiled_trees.KEEP_OBJECTS + 3):  # older versions' objects
        path = tmp_path / f"old{k:02d}.o"
        path.write_bytes(b"\0")
        os.utime(path, (1_000_000 + k, 1_000_000 + k))
        old.append(path)
    bundle = _bundle(trained)
    assert compile_bundle(bundle, tmp_path) == []
    kept = set(tmp_path.glob("*.o"))
    assert len(kept) == compiled_trees.KEEP_OBJECTS
    new = kept - set(old)
    assert len(new) == 4  # this version's four boosters, all kept
    assert kept - new == set(old[-(compiled_trees.KEEP_OBJECTS - 4):])  # the newest old ones
    X = np.zeros((2, bundle.classifier.num_feature()))
    assert np.isfinite(bundle.classifier.predict(X)).all()


# ------------------------------------------------------------- the holder: serve, then swap
@pytest.fixture
def holder_world(trained, tmp_path):
    """Settings with a registry of their own (tags written here stay here); the bundle's
    artifacts and the feature store are the trained world's, read only."""
    from features.store import get_store

    source = trained[0]
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    shutil.copy2(source.data_dir / "mlflow.db", settings.data_dir / "mlflow.db")
    return settings, get_store(source)


def _holder(holder_world, **kw):
    from serving.model_holder import ModelHolder

    settings, store = holder_world
    return ModelHolder(settings, 3600, store=store, alias="challenger", **kw)


def test_the_holder_serves_lightgbm_at_once_then_compiled_trees(holder_world, rows, tmp_path,
                                                                monkeypatch):
    gate = tmp_path / "gate"
    monkeypatch.setattr(compile_job, "worker_command", _gated(gate))
    monkeypatch.delenv(compiled_trees.ENV, raising=False)
    phases, events = [], []
    holder = _holder(holder_world, on_phase=phases.append,
                     on_event=lambda outcome, _v: events.append(outcome))
    try:
        assert holder.ready and holder.phase() == "compiling 0/4"
        lightgbm = holder.scorer
        assert not isinstance(lightgbm.bundle.classifier, CompiledBooster)
        assert len(_running_compiles()) == compile_job.parallelism(4)
        assert holder.phase() == "compiling 0/4"  # held at the gate: nothing compiled yet
        before = lightgbm.score(rows)
        gate.touch()
        assert holder.wait_compiled(timeout=300)
        assert holder.phase() == "ready-compiled"
        compiled = holder.scorer
        assert compiled is not lightgbm and compiled.version == lightgbm.version
        assert isinstance(compiled.bundle.classifier, CompiledBooster)
        after = compiled.score(rows)
        np.testing.assert_allclose(after["p_late"], before["p_late"], rtol=0, atol=1e-12)
        assert (after["reasons"] == before["reasons"]).all()
        assert phases[0] == "loading" and phases[1] == "compiling 0/4"
        assert phases[-2:] == ["compiling 4/4", "ready-compiled"], phases
        assert events == ["loaded"] and compile_job.live_pids() == []
    finally:
        holder.close()


def test_the_holder_keeps_lightgbm_when_compiling_dies(holder_world, monkeypatch, caplog):
    monkeypatch.setattr(compile_job, "worker_command", lambda *_: [
        sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    events = []
    with caplog.at_level(logging.WARNING):
        holder = _holder(holder_world, on_event=lambda outcome, _v: events.append(outcome))
        assert holder.wait_compiled(timeout=120)
    assert holder.ready and holder.phase() == "ready-with-lightgbm"
    assert not isinstance(holder.scorer.bundle.classifier, CompiledBooster)
    lines = [r.getMessage() for r in caplog.records
             if r.levelno >= logging.WARNING and r.name.startswith("serving")]
    assert len(lines) == 1 and "SIGKILL" in lines[0] and "LightGBM" in lines[0], lines
    assert events == ["loaded", "compile_failed"]


def test_closing_the_holder_ends_its_compile_processes(holder_world, tmp_path, monkeypatch):
    monkeypatch.setattr(compile_job, "worker_command", _gated(tmp_path / "never"))
    holder = _holder(holder_world)
    pids = _running_compiles()
    assert len(pids) == compile_job.parallelism(4) and not any(_gone(p) for p in pids)
    holder.close()
    assert _wait_gone(pids) == [] and compile_job.live_pids() == []
    assert holder.ready and holder.phase() == "compiling 0/4"  # LightGBM serves on


DRIVER = """
import json, sys, time
from pathlib import Path
from serving import compile_job, compiled_trees
from training.bundle import Bundle
folder, cache, gate = sys.argv[1:4]
code = {code!r}
compile_job.worker_command = lambda m, o: [sys.executable, "-c", code, gate, str(m), str(o)]
run = compiled_trees.CompileRun(Bundle.load(Path(folder), version="1"), Path(cache)).start()
while len(compile_job.live_pids()) < compile_job.parallelism(4):
    time.sleep(0.05)
print(json.dumps(compile_job.live_pids()), flush=True)
sys.stdin.readline()  # the test has seen the compile processes alive
if sys.argv[4] == "exits":
    sys.exit(0)
time.sleep(600)
"""


@pytest.mark.parametrize("ending", ["exits", "killed"])
def test_no_compile_process_outlives_its_parent(trained, tmp_path, ending):
    settings, _, report = trained
    c = client(settings)
    folder = bundle_folder(settings, c, c.get_model_version(MODEL_NAME, str(report.version)))
    code = _gated(tmp_path / "never")("m", "o")[2]
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER.format(code=code), str(folder), str(tmp_path / "cache"),
         str(tmp_path / "never"), ending],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(driver.stdout.readline())
        assert len(pids) == compile_job.parallelism(4) and not any(_gone(p) for p in pids)
        driver.stdin.write("go\n")
        driver.stdin.flush()
        if ending == "killed":
            os.kill(driver.pid, signal.SIGKILL)  # no exit handlers: the lifeline alone
        driver.wait(timeout=60)
        assert _wait_gone(pids) == []
    finally:
        driver.kill()
        driver.wait()
