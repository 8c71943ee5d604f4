"""Feast's own commands on shipdelay's feature repository: `feast feature-views list`,
`feast entities list`, `feast plan` and `feast ui`, reading the `feature_store.yaml` written from
Settings, over a store that `features build` applied.

The Feast CLI runs in a copy of features/repo (the same modules, the generated file beside
them), so that tests never rewrite the working tree's own feature_store.yaml.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from feast import FeatureStore
from feast.repo_config import load_repo_config

from features.build import build_features
from features.feast_yaml import REPO_DIR, feature_store_yaml, write_feature_store_yaml
from features.feature_sets import FeatureSet
from features.repo.services import apply_feature_set
from features.schema import DESCRIPTIONS, ENTITY_KEYS, ON_DEMAND, VIEWS
from features.store import UrlRedisOnlineStoreConfig, get_store, offline_dir, repo_config
from shipdelay.settings import Settings
from tests.net import free_port

FEAST = str(Path(sys.executable).with_name("feast"))
ODFV = "delay_on_demand"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(small_world, tmp_path_factory) -> tuple[Path, Settings]:
    """A built store (offline, applied; no online load) and a copy of features/repo holding
    the feature_store.yaml written for it, with one feature set applied beside the full
    FeatureService as a training run would."""
    lake, _ = small_world
    root = tmp_path_factory.mktemp("feast-cli")
    (root / "data").mkdir()
    (root / "data" / "lake").symlink_to(lake.root.resolve())
    settings = Settings(data_dir=root / "data")
    build_features(settings, online=False)
    apply_feature_set(get_store(settings), offline_dir(settings), FeatureSet(("weather",)))
    folder = root / "repo"
    shutil.copytree(REPO_DIR, folder, ignore=shutil.ignore_patterns(
        "__pycache__", "feature_store.yaml"))
    write_feature_store_yaml(settings, folder)
    return folder, settings


def feast(folder: Path, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([FEAST, *args], check=False, cwd=folder, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def first_column(table: str) -> set[str]:
    return {line.split()[0] for line in table.splitlines()[1:] if line.strip()}


def test_feast_lists_the_views_and_entities_of_the_schema(repo):
    folder, _ = repo
    assert first_column(feast(folder, "feature-views", "list")) == {*VIEWS, ODFV}
    assert first_column(feast(folder, "entities", "list")) == set(ENTITY_KEYS)


def test_every_feature_carries_its_schema_description_in_feast(repo):
    """The registry Feast reads from the yaml holds each stored feature's description from the
    schema list, and each view's. The on-demand view's computed features carry none: Feast 0.67
    drops them when it reads the view back, and its projection check at online reads then
    refuses described features as missing: their descriptions are the view's tags."""
    folder, _ = repo
    store = FeatureStore(repo_path=str(folder))  # Feast's own reading of the yaml
    stored = store.registry.proto()
    specs = [v.spec for v in stored.feature_views] + \
        [v.spec for v in stored.on_demand_feature_views]
    described = {f.name: f.description for spec in specs for f in spec.features}
    expected = {c: DESCRIPTIONS[c] for cols in VIEWS.values() for c in cols}
    assert described == {**expected, **{c: "" for c in ON_DEMAND}}
    assert all(expected.values())  # none empty
    odfv = store.get_on_demand_feature_view(ODFV)
    assert odfv.tags == {f"feature.{c}": DESCRIPTIONS[c] for c in ON_DEMAND}
    assert all(DESCRIPTIONS[c] for c in ON_DEMAND)
    assert {s.name for s in specs if s.description} == {*VIEWS, ODFV}
    # the views as Feast's Python API returns them carry the same
    api = {f.name: f.description for v in store.list_feature_views() for f in v.features}
    assert api == {c: DESCRIPTIONS[c] for cols in VIEWS.values() for c in cols}


def test_feast_plan_changes_and_deletes_nothing(repo):
    """`feast plan` (what `feast apply` would do) finds every object shipdelay applied,
    the feature set's FeatureService too: nothing to delete or create."""
    folder, _ = repo
    out = feast(folder, "plan")
    lines = [line for line in out.splitlines() if not line.startswith((" ", "\t"))]
    assert not [line for line in lines if line.startswith(("Deleted", "Created entity",
                                                           "Created feature",
                                                           "Created on demand"))], out[-3000:]


def test_feast_ui_starts_and_answers_with_the_views(repo):
    folder, _ = repo
    port = free_port()
    proc = subprocess.Popen([FEAST, "ui", "-h", "127.0.0.1", "-p", str(port)], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    url = f"http://127.0.0.1:{port}/api/v1/feature_views?project=shipdelay"
    try:
        deadline, body = time.monotonic() + 180, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    body = json.loads(answer.read())
                break
            except OSError:
                time.sleep(1)
        assert body is not None, f"feast ui did not answer (exit code {proc.poll()})"
        assert {*VIEWS, ODFV} <= set(json.dumps(body).split('"'))
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_yaml_describes_the_store_shipdelay_opens(tmp_path):
    """Feast's loader, reading the generated file, finds the registry, online and offline
    stores that shipdelay's configuration in code names."""
    settings = Settings(data_dir=tmp_path / "data")
    write_feature_store_yaml(settings, tmp_path)
    loaded = load_repo_config(tmp_path, tmp_path / "feature_store.yaml")
    ours = repo_config(settings)
    assert loaded.project == ours.project
    assert loaded.registry.path == ours.registry.path
    assert loaded.online_store.type == "sqlite"
    assert loaded.online_store.path == ours.online_store.path
    assert loaded.offline_store.type == ours.offline_store.type
    assert loaded.entity_key_serialization_version == ours.entity_key_serialization_version


def test_a_redis_password_stays_out_of_the_file(tmp_path, monkeypatch):
    url = "rediss://:s3cret%2Cpw@cache.internal:6380/2"
    settings = Settings(data_dir=tmp_path / "data", online_store="redis", redis_url=url)
    text = feature_store_yaml(settings)
    assert "s3cret" not in text
    assert yaml.safe_load(text)["online_store"]["url"] == "${SHIPDELAY_REDIS_URL}"
    write_feature_store_yaml(settings, tmp_path)
    monkeypatch.setenv("SHIPDELAY_REDIS_URL", url)
    loaded = load_repo_config(tmp_path, tmp_path / "feature_store.yaml").online_store
    assert isinstance(loaded, UrlRedisOnlineStoreConfig)
    assert loaded.url.get_secret_value() == url
    assert loaded.connection_string == "cache.internal:6380,db=2,ssl=true"
    plain = Settings(data_dir=tmp_path / "data", online_store="redis",
                     redis_url="redis://127.0.0.1:6379/4")
    assert yaml.safe_load(feature_store_yaml(plain))["online_store"]["url"] == \
        "redis://127.0.0.1:6379/4"
