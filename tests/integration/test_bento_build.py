"""`shipdelay export-bento` then `bentoml build`: a Bento of the service carrying the champion,
and that Bento served with no MLflow registry in reach, answering with the champion's version.
BentoML's home is a temporary folder; `bentoml containerize` needs Docker and is not run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from registry.loader import CHAMPION, alias_version, bundle_folder
from registry.store import MODEL_NAME, client
from shipdelay.lake import Lake
from shipdelay.settings import Settings
from tests.net import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def run(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def built(trained, tmp_path_factory):
    """A copy of the trained world whose newest version is the champion, exported and built
    into a Bento under a BentoML home of its own."""
    source, _, _ = trained
    root = tmp_path_factory.mktemp("bento")
    data = root / "data"
    (data / "feast").mkdir(parents=True)
    shutil.copy2(source.data_dir / "mlflow.db", data / "mlflow.db")
    for name in ("online.db", "registry.db"):
        shutil.copy2(source.data_dir / "feast" / name, data / "feast" / name)
    (data / "feast" / "offline").symlink_to((source.data_dir / "feast" / "offline").resolve())
    (data / "lake").symlink_to(source.lake_dir.resolve())
    settings = Settings(data_dir=data)
    c = client(settings)
    version = max((mv.version for mv in c.search_model_versions(f"name='{MODEL_NAME}'")), key=int)
    c.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    env = {**os.environ, "BENTOML_HOME": str(root / "bentoml"), "SHIPDELAY_DATA_DIR": str(data),
           "BENTOML_DO_NOT_TRACK": "True", "PYTHONWARNINGS": "ignore"}
    first = run([str(BIN / "shipdelay"), "export-bento"], env)
    again = run([str(BIN / "shipdelay"), "export-bento"], env)
    build = run([str(BIN / "bentoml"), "build", "--output", "tag"], env)
    return settings, str(version), env, first, again, build


def bento_dir(env) -> Path:
    (folder,) = [p for p in (Path(env["BENTOML_HOME"]) / "bentos" / "shipdelay").iterdir()
                 if p.is_dir()]
    return folder


def stored_models(env) -> list[Path]:
    return [p for p in (Path(env["BENTOML_HOME"]) / "models" / MODEL_NAME).iterdir()
            if p.is_dir()]


def test_export_copies_the_champion_bundle_once(built):
    settings, version, env, first, again, _ = built
    assert f"model version {version}" in first and "exported to BentoML" in first
    assert "already exported" in again
    (model,) = stored_models(env)  # the second export made no second model
    labels = yaml.safe_load((model / "model.yaml").read_text())["labels"]
    assert labels["mlflow_version"] == version and labels["alias"] == CHAMPION
    c = client(settings)
    registry = bundle_folder(settings, c, c.get_model_version(MODEL_NAME, version))
    files = sorted(p.name for p in registry.iterdir() if p.name != "source_run.txt")
    assert files and all((model / f).read_bytes() == (registry / f).read_bytes() for f in files)


def test_bentoml_build_makes_a_bento_of_the_service_with_the_model(built):
    _, _, env, _, _, build = built
    folder = bento_dir(env)
    assert folder.name in build
    info = yaml.safe_load((folder / "bento.yaml").read_text())
    assert info["service"] == "serving.service:ShipDelay"
    (model,) = stored_models(env)
    assert [m["tag"] for m in info["models"]] == [f"{MODEL_NAME}:{model.name}"]
    assert {e["name"]: e["value"] for e in info["envs"]}["SHIPDELAY_MODEL_SOURCE"] == "bentoml"
    src = folder / "src"
    assert (src / "serving" / "service.py").is_file() and (src / "features" / "schema.py").is_file()
    assert not (src / "data").exists() and not (src / "tests").exists()


def test_bentofile_packages_are_the_pyproject_ones():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [p for extra in ("features", "training", "serving")
                                        for p in project["optional-dependencies"][extra]]
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert bentofile["python"]["packages"] == wanted


def test_the_bento_serves_the_exported_model_without_the_registry(built):
    """`bentoml serve` of the built Bento, its model from BentoML's store, the MLflow registry
    pointed at nothing: /predict answers in-flight shipments with the champion's version."""
    settings, version, env, _, _, build = built
    tag = build.strip().splitlines()[-1].removeprefix("__tag__:")
    lake = Lake(settings.lake_dir)
    outcomes = set(lake.read("outcomes", columns=["shipment_id"])["shipment_id"])
    shipments = lake.read("shipments", columns=["shipment_id", "booked_at"])
    ids = shipments.loc[~shipments["shipment_id"].isin(outcomes)].sort_values("booked_at")[
        "shipment_id"].astype(str).tail(20).tolist()
    as_of = lake.read("tracking_events", columns=["ingested_at"])["ingested_at"].max()
    port = free_port()
    serve_env = {**env, "SHIPDELAY_MODEL_SOURCE": "bentoml", "SHIPDELAY_COMPILED_TREES": "0",
                 "SHIPDELAY_MLFLOW_TRACKING_URI": "http://127.0.0.1:9/",
                 "SHIPDELAY_SERVE_AS_OF": as_of.isoformat(), "SHIPDELAY_PREDICTION_LOG": "false"}
    proc = subprocess.Popen([str(BIN / "bentoml"), "serve", tag, "--host", "127.0.0.1",
                             "--port", str(port)], env=serve_env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        answer, deadline = None, time.monotonic() + 300
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/predict", data=json.dumps({"shipment_ids": ids}).encode(),
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
            except OSError:
                time.sleep(2)
        assert answer is not None, f"the Bento did not answer (exit code {proc.poll()})"
        scored = [item for item in answer if item["ok"]]
        assert scored, answer[:3]
        assert {item["model_version"] for item in scored} == {version}
        assert alias_version(settings, CHAMPION) == version
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
