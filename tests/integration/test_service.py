"""The prediction service at the three levels BentoML documents: the class called directly, the
ASGI app in process (starlette's TestClient), and a real served process over HTTPS; plus a fuzz
of the API from its own OpenAPI document.

Every test runs against a copy of the `trained` world's registry and online store (the session
fixture is shared with other modules: promoting and registering here must not move its aliases),
with the service clock frozen at the simulated world's "now".
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from features.online import online_vectors
from features.schema import model_feature_names
from features.store import get_store
from registry.loader import CHAMPION, alias_version, load_by_alias
from registry.store import MODEL_NAME, client
from shipdelay.lake import Lake
from shipdelay.settings import Settings, get_settings
from tests.conftest import TRAINING, assert_serve_option_refused
from tests.net import free_port, self_signed

pytest.importorskip("bentoml")

API_KEY = "test-key-0123456789"
AS_OF = pd.Timestamp(TRAINING.start, tz="UTC") + pd.Timedelta(days=TRAINING.days)  # world's now
UNKNOWN_ID = "NO-SUCH-SHIPMENT"
CUSTOM_METRICS = ["shipdelay_predictions_total", "shipdelay_predict_latency_seconds",
                  "shipdelay_p_late", "shipdelay_feature_age_hours", "shipdelay_model_reloads_total",
                  "shipdelay_rejected_requests_total", "shipdelay_batch_size"]
READY_TIMEOUT_S = 240  # BentoML's arbiter and worker import mlflow, feast and lightgbm: slow
RELOAD_TIMEOUT_S = 90
KEEPALIVE_REQUESTS = 3  # the served process closes a connection after this many answers


@dataclass
class World:
    settings: Settings
    run_id: str
    live: list[str]  # in flight, known to the online store
    delivered: list[str]


def _copy_world(source: Settings, root: Path) -> Settings:
    """Own registry and online store; the lake and offline tables are read-only, so linked."""
    (root / "feast").mkdir(parents=True)
    shutil.copy2(source.data_dir / "mlflow.db", root / "mlflow.db")
    for name in ("online.db", "registry.db"):
        shutil.copy2(source.data_dir / "feast" / name, root / "feast" / name)
    (root / "feast" / "offline").symlink_to((source.data_dir / "feast" / "offline").resolve())
    (root / "lake").symlink_to(source.lake_dir.resolve())
    return Settings(data_dir=root)


def champion_copy(source: Settings, root: Path) -> Settings:
    """A copy of the trained world under `root` whose newest model is the champion."""
    settings = _copy_world(source, root)
    if alias_version(settings, CHAMPION) is None:
        c = client(settings)
        version = alias_version(settings, "challenger") or max(
            (mv.version for mv in c.search_model_versions(f"name='{MODEL_NAME}'")), key=int)
        c.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    return settings


@pytest.fixture(scope="module")
def world(trained, tmp_path_factory) -> World:
    source, _, report = trained
    settings = champion_copy(source, tmp_path_factory.mktemp("service") / "data")
    lake = Lake(settings.lake_dir)
    outcomes = lake.read("outcomes").sort_values("delivered_at")
    shipments = lake.read("shipments").sort_values("booked_at")
    store = get_store(settings)
    in_flight = shipments.loc[~shipments["shipment_id"].isin(outcomes["shipment_id"]),
                              "shipment_id"].astype(str).tail(80).tolist()
    v = online_vectors(store, in_flight, AS_OF)
    live = v.loc[v["known"] & ~v["delivered"], "shipment_id"].tolist()
    d = online_vectors(store, outcomes["shipment_id"].astype(str).tail(20).tolist(), AS_OF)
    delivered = d.loc[d["known"] & d["delivered"], "shipment_id"].tolist()
    assert len(live) >= 10 and delivered, "the trained world has too few shipments to serve"
    return World(settings, report.run_id, live, delivered)


@pytest.fixture(scope="module")
def env(world):
    """The environment the service reads its Settings and options from."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIPDELAY_DATA_DIR", str(world.settings.data_dir))
        mp.setenv("SHIPDELAY_API_KEY", API_KEY)
        mp.setenv("SHIPDELAY_SERVE_AS_OF", AS_OF.isoformat())
        mp.setenv("SHIPDELAY_MODEL_REFRESH_SECONDS", "3600")  # in process: no surprise reloads
        # compiled before serving: one scorer throughout, never swapped between two calls
        mp.setenv("SHIPDELAY_COMPILED_TREES", "wait")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


def _jsonable(frame: pd.DataFrame) -> list[dict]:
    rows = frame[["shipment_id", *model_feature_names()]].astype(object).to_dict("records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else
                 v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
            for r in rows]


# ------------------------------------------------------------------ level 1: the class itself
@pytest.fixture(scope="module")
def service(env):
    from serving.service import ShipDelay

    return ShipDelay()


def test_reasons_go_to_the_riskiest_from_the_configured_probability(service, world):
    from serving.options import ServeOptions
    from serving.scorer import Thresholds

    assert ServeOptions().reasons_from == Thresholds().high  # as the nightly batch

    def predict(reasons_from: float):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(service, "options",
                       dataclasses.replace(service.options, reasons_from=reasons_from))
            return [i for i in service.predict(world.live) if i.ok]

    every = predict(0.0)
    assert all(1 <= len(i.reasons) <= 3 for i in every)
    cut = float(np.median([i.p_late for i in every]))
    some = predict(cut)
    assert [i.p_late for i in some] == [i.p_late for i in every]  # only the reasons differ
    explained = [i.p_late >= cut for i in some]
    assert any(explained) and not all(explained)
    for item, full, asked in zip(some, every, explained):
        assert item.reasons == (full.reasons if asked else [])


def test_repeated_questions_recall_reasons_instead_of_computing_them(service, world,
                                                                   reasons_calls):
    from serving.reasons_memory import ReasonsMemory

    calls = reasons_calls(service._scorer())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(service, "options", dataclasses.replace(service.options, reasons_from=0.0))
        mp.setattr(service, "reasons_memory", ReasonsMemory())
        first = service.predict(world.live[:20])
        again = service.predict(world.live[:20])
    assert sum(calls) == sum(1 for i in first if i.ok)  # once each, the first time
    assert [i.reasons for i in again] == [i.reasons for i in first]
    assert all(i.reasons for i in again if i.ok)


def test_reasons_threshold_from_the_environment_is_checked(monkeypatch):
    from serving.options import ServeOptions

    monkeypatch.setenv("SHIPDELAY_SERVE_REASONS_FROM", "0")
    assert ServeOptions.from_env().reasons_from == 0.0
    assert_serve_option_refused(monkeypatch, "SHIPDELAY_SERVE_REASONS_FROM",
                                ("1.5", "-0.1", "high"))
    monkeypatch.delenv("SHIPDELAY_SERVE_REASONS_FROM")
    for name, field in (("SHIPDELAY_SERVE_CACHE_SECONDS", "cache_seconds"),
                        ("SHIPDELAY_SERVE_REASONS_SECONDS", "reasons_seconds")):
        monkeypatch.setenv(name, "0")
        assert getattr(ServeOptions.from_env(), field) == 0.0
        assert_serve_option_refused(monkeypatch, name, ("-1", "inf", "soon"))
        monkeypatch.delenv(name)


def test_collector_thresholds_from_the_environment(monkeypatch, service):
    import gc

    from serving.options import GC_THRESHOLD, ServeOptions

    assert gc.get_threshold() == GC_THRESHOLD == service.options.gc_threshold  # set at start
    monkeypatch.setenv("SHIPDELAY_SERVE_GC_THRESHOLD", "10000,10,10")
    assert ServeOptions.from_env().gc_threshold == (10_000, 10, 10)
    monkeypatch.setenv("SHIPDELAY_SERVE_GC_THRESHOLD", "0")
    assert ServeOptions.from_env().gc_threshold is None  # Python's own
    assert_serve_option_refused(monkeypatch, "SHIPDELAY_SERVE_GC_THRESHOLD",
                                ("700,10", "a,b,c", "700,0,10"))


def test_class_answers_known_unknown_and_delivered_ids(service, world):
    ids = [world.live[0], UNKNOWN_ID, world.delivered[0], world.live[1]]
    items = service.predict(ids)
    assert [i.shipment_id for i in items] == ids
    live, unknown, delivered = items[0], items[1], items[2]
    assert live.ok and items[3].ok and live.error is None
    assert 0 < live.p_late < 1 and live.risk_band in ("low", "medium", "high")
    assert live.delay_p50_h <= live.delay_p90_h
    assert live.eta_p10 <= live.eta <= live.eta_p90
    # the ETA is anchored at the service clock (the world's now), not at the wall clock
    assert abs(live.eta - AS_OF.to_pydatetime()) < dt.timedelta(days=120)
    # reasons for the high band (the default), none below it
    assert bool(live.reasons) == (live.p_late >= service.options.reasons_from)
    assert live.model_version == service.holder.version == alias_version(world.settings,
                                                                         CHAMPION)
    assert (unknown.ok, unknown.error, unknown.status) == (False, "unknown shipment", "unknown")
    assert (delivered.ok, delivered.error) == (False, "already delivered")
    assert delivered.status == "delivered"
    # delivered long ago (the online store may have no row for it) or lately: when, from the
    # lake's outcomes
    outcomes = Lake(world.settings.lake_dir).read("outcomes", columns=["shipment_id",
                                                                       "delivered_at"])
    outcomes = outcomes[outcomes["delivered_at"] <= AS_OF].sort_values("delivered_at")
    first = str(outcomes["shipment_id"].iloc[0])
    (old,) = service.predict([first])
    when = outcomes.set_index("shipment_id")["delivered_at"]
    assert (old.status, old.error) == ("delivered", "already delivered")
    assert old.delivered_at == when[first].to_pydatetime()
    assert delivered.delivered_at == when[world.delivered[0]].to_pydatetime()
    # what a page needs beside the forecast: the promise (the features' hours to it, from the
    # service clock) and the current mode; no delivery time before the service's now
    vector = online_vectors(service.store, [world.live[0]], AS_OF).iloc[0]
    assert live.status == "in_flight"
    assert live.promised_at == pytest.approx(
        AS_OF.to_pydatetime() + dt.timedelta(hours=float(vector["hours_to_promised"])),
        abs=dt.timedelta(milliseconds=1))
    assert live.mode == (vector["current_mode"] or vector["main_mode"])
    assert all(i.eta_p10 >= AS_OF.to_pydatetime() for i in (live, items[3]))
    # the lane and the current hub: as the lake's booking and Feast's own read of the progress
    booked = Lake(world.settings.lake_dir).read("shipments").set_index("shipment_id")
    hubs = service.store.get_online_features(
        features=["shipment_progress:current_hub"],
        entity_rows=[{"shipment_id": i} for i in ids]).to_df()["current_hub"].tolist()
    for item, hub in zip((live, items[3]), (hubs[0], hubs[3])):
        row = booked.loc[item.shipment_id]
        assert item.lane == f"{row['origin_hub']}>{row['destination_hub']}"
        assert item.current_hub == (hub if isinstance(hub, str) else None)
    assert (unknown.lane, unknown.current_hub) == (None, None)
    assert service.__is_ready__()


def test_class_answers_repeated_ids_alike(service, world):
    """Adaptive batching merges requests, so one call can hold the same id twice."""
    a, b, c = service.predict([world.live[2], world.live[3], world.live[2]])
    assert a == c and a.shipment_id == world.live[2] and b.shipment_id == world.live[3]


def test_one_bad_row_fails_alone(service, world, monkeypatch):
    from serving.scorer import Scorer

    rows = _jsonable(online_vectors(service.store, world.live[:2], AS_OF))
    rows[0]["hours_to_promised"] = 1e300  # a promise centuries away still gets an answer
    assert all(item.ok for item in service.predict_features(rows))
    rows[0]["hours_to_promised"] = -12345.0
    real = Scorer.score_columns

    def fragile(self, vectors, *args, **kwargs):
        if (np.asarray(vectors["hours_to_promised"]) == -12345.0).any():
            raise ValueError("this row breaks the model")
        return real(self, vectors, *args, **kwargs)

    monkeypatch.setattr(Scorer, "score_columns", fragile)
    bad, good = service.predict_features(rows)
    assert (bad.ok, bad.error) == (False, "scoring failed") and good.ok


def test_a_failing_feature_store_is_a_per_item_error(service, world, monkeypatch):
    class Down:
        def get_online_features(self, *args, **kwargs):
            raise ConnectionError("online store down")

        vectors = ping = get_online_features

    assert service.reader is not None  # the direct read is the default
    for attribute in ("reader", "store"):  # the direct read, then Feast's
        monkeypatch.setattr(service, attribute, Down())
        (item,) = service.predict(world.live[:1])
        assert (item.ok, item.error) == (False, "feature store unavailable")
        assert not service.__is_ready__()
        if attribute == "reader":
            monkeypatch.setattr(service, "reader", None)


def test_direct_and_feast_reads_give_the_same_answers(service, world, monkeypatch):
    ids = [*world.live[:25], UNKNOWN_ID, world.delivered[0]]
    direct = service.predict(ids)
    assert service.reader is not None and sum(i.ok for i in direct) == 25
    monkeypatch.setattr(service, "reader", None)
    assert service.predict(ids) == direct


def test_scorer_matrix_is_the_specs(service, world):
    """The scorer's bulk model matrix equals FeatureSpec.matrix on every kind of frame: the
    direct read's, Feast's (integer columns), and what-if rows (objects, text, unseen levels)."""
    scorer = service.holder.scorer
    spec = scorer.bundle.spec
    ids = world.live[:30]
    what_if = pd.DataFrame(_jsonable(online_vectors(service.store, ids, AS_OF)))
    what_if.loc[0, "main_mode"] = "hovercraft"  # a level the model never saw
    what_if.loc[1, "slip_h"] = "12.5"  # a number as text: coerced, as the spec does
    what_if["n_legs"] = what_if["n_legs"].astype(object)
    frames = [service.reader.vectors(ids, AS_OF), online_vectors(service.store, ids, AS_OF),
              what_if]
    for frame in frames:
        expected = spec.matrix(frame).to_numpy(dtype=float)
        np.testing.assert_array_equal(scorer.matrix(frame), expected)
    with pytest.raises(KeyError, match="slip_h"):
        scorer.matrix(what_if.drop(columns=["slip_h"]))


def test_histograms_filled_in_bulk_equal_one_at_a_time():
    import prometheus_client as pc

    from serving.metrics import observe_many

    values = [0.05, 0.3, 0.3, 0.31, 0.7, 1.0, 1.5, -2.0, float("nan"), float("inf"), 0.1]
    buckets = (0.1, 0.3, 0.5, 1.0)
    registry = pc.CollectorRegistry()
    bulk = pc.Histogram("bulk", "", registry=registry, buckets=buckets)
    single = pc.Histogram("single", "", registry=registry, buckets=buckets)
    observe_many(bulk, values)
    for v in values:
        if np.isfinite(v):
            single.observe(v)

    def samples(name):
        return [(s.name.replace(name, ""), s.labels, s.value)
                for m in registry.collect() if m.name == name for s in m.samples
                if not s.name.endswith("_created")]

    assert samples("bulk") == samples("single") and samples("bulk")


# ---------------------------------------------------------------- the model holder on its own
def test_holder_keeps_the_last_good_model(world, env, monkeypatch):
    from features.online import FeatureServiceMismatch
    from serving import model_holder as mh

    events: list[str] = []
    holder = mh.ModelHolder(world.settings, refresh_seconds=0, store=get_store(world.settings),
                            background=False, on_event=lambda outcome, _: events.append(outcome))
    served = holder.version
    assert served is not None and events == ["loaded"]

    def unreachable(*_):
        raise ConnectionError("registry down")

    monkeypatch.setattr(mh, "alias_version", unreachable)
    holder.maybe_reload()
    assert holder.version == served and events[-1] == "registry_error"

    monkeypatch.setattr(mh, "alias_version", lambda *_: "999")
    monkeypatch.setattr(mh, "load_by_alias", unreachable)
    holder.maybe_reload()
    assert holder.version == served and events[-1] == "load_error"

    foreign = load_by_alias(world.settings)
    foreign.spec.service = "some_other_service"  # trained on features serving cannot read
    monkeypatch.setattr(mh, "load_by_alias", lambda *_: foreign)
    holder.maybe_reload()
    assert holder.version == served and events[-1] == "refused"
    assert "some_other_service" in holder.last_error
    with pytest.raises(FeatureServiceMismatch, match="not_a_feature"):
        foreign.spec.service = "delay_model_v1"
        foreign.spec.features = [*foreign.spec.features, "not_a_feature"]
        mh.check_servable(foreign, None)


def test_the_champion_is_served_from_compiled_trees(service):
    from serving.compiled_trees import CompiledBooster

    bundle = service.holder.scorer.bundle
    assert isinstance(bundle.classifier, CompiledBooster)
    assert all(isinstance(b, CompiledBooster) for b in bundle.quantiles.values())
    assert list((service.settings.data_dir / "compiled").glob("*.o"))


def test_holder_serves_lightgbm_when_compiling_is_off(world, env, monkeypatch):
    from serving.compiled_trees import CompiledBooster
    from serving.model_holder import ModelHolder

    monkeypatch.setenv("SHIPDELAY_COMPILED_TREES", "0")
    holder = ModelHolder(world.settings, background=False)
    assert holder.ready and not isinstance(holder.scorer.bundle.classifier, CompiledBooster)


def test_holder_without_a_champion_is_not_ready(world, env):
    from serving.model_holder import ModelHolder

    holder = ModelHolder(world.settings, alias="nobody", background=False)
    assert not holder.ready and holder.scorer is None and "nobody" in holder.last_error


# ----------------------------------------------------------------- level 2: the ASGI app
@pytest.fixture(scope="module")
def asgi(env):
    from starlette.testclient import TestClient

    from serving.service import ShipDelay

    with TestClient(ShipDelay.to_asgi()) as c:
        yield c


KEY = {"X-API-Key": API_KEY}


def _post(asgi, path: str, body, headers=KEY, **kw) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return asgi.post(path, content=body, headers={"content-type": "application/json",
                                                      **headers}, **kw)
    return asgi.post(path, json=body, headers=headers, **kw)


@pytest.mark.parametrize("path, body, field", [
    ("/predict", '{"shipment_ids": ["a",', ""),  # malformed JSON
    ("/predict", "", "shipment_ids"),  # no body at all
    ("/predict", {"shipment_ids": []}, "shipment_ids"),
    ("/predict", {"shipment_ids": "SH1"}, "shipment_ids"),
    ("/predict", {"shipment_ids": [1, 2]}, "shipment_ids"),
    ("/predict", {"shipment_ids": [f"S{i}" for i in range(501)]}, "shipment_ids"),
    ("/predict", {"shipment_ids": ["a", "a"]}, "shipment_ids"),
    ("/predict", {"shipment_ids": ["x" * 65]}, "shipment_ids"),
    ("/predict", {"ids": ["a"]}, "ids"),
    ("/predict", [["a"]], ""),
    ("/predict_features", {"rows": []}, "rows"),
    ("/predict_features", {"rows": [{"slip_h": 1.0}]}, "missing model feature(s)"),
    ("/predict_features", {"rows": "nope"}, "rows"),
])
def test_bad_input_is_400_naming_the_field(asgi, path, body, field):
    r = _post(asgi, path, body)
    assert r.status_code == 400, r.text
    assert field in r.text and "error" in r.json()
    if body == '{"shipment_ids": ["a",':
        assert r.json()["detail"][0]["type"] == "json_invalid"


def test_what_if_rows_name_the_missing_feature(asgi, world, service):
    rows = _jsonable(online_vectors(service.store, world.live[:1], AS_OF))
    del rows[0]["slip_h"]
    rows[0]["main_mode"] = 3
    r = _post(asgi, "/predict_features", {"rows": rows})
    assert r.status_code == 400
    assert "rows[0]: missing model feature(s): slip_h" in r.text
    assert "main_mode must be a string or null" in r.text


def test_http_predict_answers_each_id(asgi, world):
    r = _post(asgi, "/predict", {"shipment_ids": [world.live[0], UNKNOWN_ID, world.delivered[0]]})
    assert r.status_code == 200
    live, unknown, delivered = r.json()
    assert live["ok"] and live["eta"].endswith("Z") and live["model_version"]
    assert unknown["error"] == "unknown shipment" and delivered["error"] == "already delivered"


def test_answers_are_written_as_bentoml_writes_them(asgi, world, service):
    """The routes' one-pass JSON writer gives the values BentoML's own response path gives."""
    import asyncio

    from _bentoml_impl.serde import JSONSerde
    from _bentoml_sdk.io_models import IOMixin

    from serving.service import ShipDelay

    ids = [*world.live[:5], UNKNOWN_ID, world.delivered[0]]
    items = service.score_ids(ids)
    spec = ShipDelay.apis["predict"].output_spec
    theirs = asyncio.run(IOMixin.to_http_response.__func__(spec, items, JSONSerde()))
    ours = asyncio.run(spec.to_http_response(items, JSONSerde()))
    theirs_body = b"".join(bytes(chunk) for chunk in theirs.body_iterator)
    assert ours.media_type == "application/json"
    assert json.loads(ours.body) == json.loads(theirs_body)
    served = _post(asgi, "/predict", {"shipment_ids": ids}).json()
    assert [i["shipment_id"] for i in served] == ids and served[0]["reasons"] is not None


def test_what_if_matches_predict_and_slip_never_lowers_risk(asgi, world, service):
    ids = world.live[:20]
    rows = _jsonable(online_vectors(service.store, ids, AS_OF))
    online = _post(asgi, "/predict", {"shipment_ids": ids}).json()
    given = _post(asgi, "/predict_features", {"rows": rows})
    assert given.status_code == 200
    base = [i["p_late"] for i in given.json()]
    # one scoring path: the same vector gives the same answer whichever door it came in by
    assert base == pytest.approx([i["p_late"] for i in online], abs=1e-12)
    for extra in (6.0, 24.0, 96.0):
        later = [{**r, "slip_h": (r["slip_h"] or 0.0) + extra} for r in rows]
        now = [i["p_late"] for i in _post(asgi, "/predict_features", {"rows": later}).json()]
        assert all(n >= b - 1e-12 for n, b in zip(now, base)), (extra, now, base)


def test_api_key_guards_every_route_but_the_probes(asgi, world):
    body = {"shipment_ids": world.live[:1]}
    assert _post(asgi, "/predict", body, headers={}).status_code == 401
    wrong = _post(asgi, "/predict", body, headers={"X-API-Key": API_KEY + "x"})
    assert wrong.status_code == 401 and "X-API-Key" in wrong.json()["error"]
    assert _post(asgi, "/predict_features", {"rows": []}, headers={}).status_code == 401
    assert asgi.get(f"/shipments/{world.live[0]}").status_code == 401
    assert asgi.get("/docs.json").status_code == 401
    assert _post(asgi, "/predict", body).status_code == 200
    assert asgi.get(f"/shipments/{world.live[0]}", headers=KEY).status_code == 200
    # the benchmark's reference is no route of the product (SHIPDELAY_SERVE_NOOP unset)
    assert _post(asgi, "/noop", {}).status_code == 404
    for probe in ("/livez", "/readyz", "/metrics"):
        assert asgi.get(probe).status_code == 200, probe


def test_one_shipment_by_get_answers_as_predict(asgi, world):
    ids = [world.live[0], world.delivered[0], UNKNOWN_ID]
    posted = _post(asgi, "/predict", {"shipment_ids": ids}).json()
    got = [asgi.get(f"/shipments/{i}", headers=KEY) for i in ids]
    assert [r.status_code for r in got] == [200, 200, 404]
    assert [r.json() for r in got] == posted
    assert [r.json()["status"] for r in got] == ["in_flight", "delivered", "unknown"]
    assert got[0].json()["lane"] and "current_hub" in got[0].json()
    too_long = asgi.get(f"/shipments/{'x' * 65}", headers=KEY)
    assert too_long.status_code == 400 and "64" in too_long.json()["detail"][0]["msg"]


def test_the_document_names_the_product_and_its_routes(asgi):
    from importlib.metadata import version

    doc = asgi.get("/docs.json", headers=KEY).json()
    assert (doc["info"]["title"], doc["info"]["version"]) == ("shipdelay", version("shipdelay"))
    assert "/noop" not in doc["paths"]
    one = doc["paths"]["/shipments/{shipment_id}"]["get"]["responses"]
    assert {"200", "400", "401", "404"} <= set(one) and "422" not in one
    answer = doc["components"]["schemas"]["Prediction"]["properties"]
    assert {"status", "promised_at", "mode", "lane", "current_hub"} <= set(answer)


def test_body_size_and_media_type_limits(asgi):
    big = b'{"shipment_ids": ["' + b"x" * 1_000_001 + b'"]}'
    r = _post(asgi, "/predict", big)
    assert r.status_code == 413 and "bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit must hold on the stream too
        for _ in range(40):
            yield b" " * 50_000

    r = asgi.post("/predict", content=chunks(),
                  headers={"content-type": "application/json", **KEY})
    assert r.status_code == 413
    for media in ("application/vnd.bentoml+pickle", "multipart/form-data; boundary=x",
                  "application/x-www-form-urlencoded", "text/plain"):
        r = asgi.post("/predict", content=b"x", headers={"content-type": media, **KEY})
        assert r.status_code == 415, media


def test_metrics_expose_the_custom_series(asgi, world):
    _post(asgi, "/predict", {"shipment_ids": [world.live[0], UNKNOWN_ID]})
    _post(asgi, "/predict", {"shipment_ids": []})
    text = asgi.get("/metrics").text
    for name in CUSTOM_METRICS:
        assert name in text, name
    assert 'shipdelay_predictions_total{outcome="unknown",route="predict"}' in text
    assert 'shipdelay_rejected_requests_total{reason="invalid"}' in text
    assert 'shipdelay_model_reloads_total{outcome="loaded"}' in text


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/predict", "/predict_features"])
def test_fuzz_from_the_openapi_document_never_5xx(asgi, path):
    """Schemathesis draws valid and invalid bodies from the service's own OpenAPI document:
    no 5xx, valid bodies accepted, invalid ones refused, answers (the 400s too) match the
    documented schema."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        negative_data_rejection,
        positive_data_acceptance,
        response_schema_conformance,
    )

    from serving.service import ShipDelay

    spec = ShipDelay.openapi_spec.asdict()
    for item in spec["paths"].values():  # BentoML 1.4.40 leaves out that a body is required
        body = item.get("post", {}).get("requestBody")
        if body and body["content"]["application/json"]["schema"].get("required"):
            body["required"] = True
    operation = schemathesis.openapi.from_dict(spec)[path]["POST"]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))
    checks = [not_a_server_error, negative_data_rejection, positive_data_acceptance,
              response_schema_conformance]

    @settings(max_examples=50, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def run(case):
        kw = case.as_transport_kwargs(base_url=str(asgi.base_url))
        send = {"json": kw["json"]} if "json" in kw else {"content": kw.get("data") or b""}
        response = asgi.request(kw["method"], kw["url"], params=kw.get("params"),
                                headers={**kw.get("headers", {}), **KEY}, **send)
        assert response.status_code < 500, response.text
        case.validate_response(response, checks=checks)

    run()


# ------------------------------------------------------- level 3: a real served process, TLS
def test_serve_command_hands_the_settings_to_the_server(tmp_path, monkeypatch):
    from serving.serve import serve_command

    settings = Settings(data_dir=tmp_path / "d", api_key="k3y", online_store="redis",
                        redis_url="redis://:pw@db:6379/2", kafka_security={"sasl": "x"})
    argv, env = serve_command(settings, "0.0.0.0", 8443, workers=2, refresh_seconds=5,
                              as_of="2025-12-27T00:00:00Z")
    assert argv[1:5] == ["-m", "bentoml", "serve", "serving.service:ShipDelay"]
    assert argv[-4:] == ["--host", "0.0.0.0", "--port", "8443"]
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"]) == {"services": {"ShipDelay": {"workers": 2}}}
    assert env["SHIPDELAY_MODEL_REFRESH_SECONDS"] == "5.0"
    assert env["SHIPDELAY_SERVE_AS_OF"] == "2025-12-27T00:00:00Z"
    for key in [k for k in os.environ if k.startswith("SHIPDELAY_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():  # the server rebuilds exactly these settings
        if key.startswith("SHIPDELAY_"):
            monkeypatch.setenv(key, value)
    rebuilt = Settings()
    assert rebuilt.api_key.get_secret_value() == "k3y"
    assert rebuilt.model_dump(exclude={"api_key"}) == {
        **settings.model_dump(exclude={"api_key"}), "data_dir": (tmp_path / "d").resolve()}
    with pytest.raises(ValueError, match="both"):
        serve_command(settings, ssl_certfile=tmp_path / "cert.pem")
    with pytest.raises(FileNotFoundError):
        serve_command(settings, ssl_certfile=tmp_path / "c.pem", ssl_keyfile=tmp_path / "k.pem")


@dataclass
class Served:
    http: httpx.Client
    port: int
    cert: Path
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (arbiter and workers), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
    try:  # workers left behind by a crashed arbiter
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="module")
def served(world, env, tmp_path_factory):
    with serving(get_settings(), tmp_path_factory.mktemp("served"),
                 {"SHIPDELAY_SERVE_KEEPALIVE_REQUESTS": str(KEEPALIVE_REQUESTS),
                  "SHIPDELAY_SERVE_NOOP": "1"}) as s:
        yield s


@contextlib.contextmanager
def serving(settings: Settings, folder: Path, extra_env: dict[str, str] | None = None,
            wait_for: str = "/readyz", **serve_kw):
    """`settings` served over TLS by a process started as `shipdelay serve` starts it, from when
    `wait_for` answers 200 until the block ends; `serve_kw` go to `serve_command`, `extra_env`
    to the process."""
    from serving.serve import serve_command

    cert, key = self_signed(folder)
    port = free_port()
    argv, proc_env = serve_command(settings, "127.0.0.1", port, ssl_certfile=cert,
                                   ssl_keyfile=key, refresh_seconds=1, as_of=AS_OF.isoformat(),
                                   **serve_kw)
    proc_env["BENTOML_HOME"] = str(folder / "bentoml")
    proc_env.update(extra_env or {})
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=proc_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        verify = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=verify, timeout=30,
                          headers=KEY) as http:
            s = Served(http, port, cert, log)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                assert proc.poll() is None, f"server exited early:\n{s.tail()}"
                assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT_S} s\n{s.tail()}"
                try:
                    if http.get(wait_for, timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            yield s
    finally:
        _stop(proc)


@pytest.mark.slow
def test_served_process_over_tls(served, world):
    assert served.http.get("/livez").status_code == 200
    assert served.http.get("/readyz").status_code == 200
    # the benchmark's setting serves its reference route
    assert served.http.post("/noop", json={}).json() == {"ok": True}
    r = served.http.post("/predict", json={"shipment_ids": [world.live[0], UNKNOWN_ID]})
    assert r.status_code == 200, served.tail()
    live, unknown = r.json()
    assert live["ok"] and live["model_version"] == alias_version(world.settings, CHAMPION)
    assert unknown["error"] == "unknown shipment"
    assert served.http.post("/predict", json={"shipment_ids": []}).status_code == 400
    unauthorized = served.http.post("/predict", json={"shipment_ids": ["a"]},
                                    headers={"X-API-Key": "wrong"})
    assert unauthorized.status_code == 401
    # TLS for real: plain HTTP is refused, and the certificate is not trusted by default
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{served.port}/livez", timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{served.port}/livez", timeout=5)
    metrics = served.http.get("/metrics").text  # collected across processes by BentoML
    assert 'shipdelay_predictions_total{outcome="ok",route="predict"}' in metrics


@pytest.mark.slow
def test_served_process_closes_a_connection_after_its_share_of_answers(served):
    """The N-th answer on one keep-alive connection says `Connection: close` and the server
    really closes it (read on the raw TLS socket); the client's next connection is served."""
    context = ssl.create_default_context(cafile=str(served.cert))

    def answers_until_closed(limit: int) -> list[str]:
        seen = []
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            for _ in range(limit):
                head = b""
                try:
                    tls.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    while b"\r\n\r\n" not in head:
                        chunk = tls.recv(4096)
                        if not chunk:
                            return seen + ["closed"]
                        head += chunk
                except OSError:  # reset or TLS end of stream: closed as well
                    return seen + ["closed"]
                head, _, body = head.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").lower().split("\r\n")
                length = next(int(x.split(":")[1]) for x in lines if x.startswith("content-length"))
                while len(body) < length:
                    body += tls.recv(4096)
                seen.append(next((x.split(":")[1].strip() for x in lines
                                  if x.startswith("connection:")), "keep-alive"))
        return seen

    for _ in range(2):  # and again on a new connection
        assert answers_until_closed(KEEPALIVE_REQUESTS + 2) == \
            ["keep-alive"] * (KEEPALIVE_REQUESTS - 1) + ["close", "closed"]


@pytest.mark.slow
def test_served_process_follows_a_new_champion_without_restart(served, world):
    from registry.register import register

    def version() -> str:
        r = served.http.post("/predict", json={"shipment_ids": world.live[:1]})
        assert r.status_code == 200, served.tail()
        return r.json()[0]["model_version"]

    before = version()
    new = register(world.settings, world.run_id)  # the same run, registered again
    client(world.settings).set_registered_model_alias(MODEL_NAME, CHAMPION, new)
    assert new != before
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    seen = before
    while seen != new and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = version()
    assert seen == new, f"still serving {seen} after {RELOAD_TIMEOUT_S} s\n{served.tail()}"
    metrics = served.http.get("/metrics").text
    assert 'shipdelay_model_reloads_total{outcome="loaded"} 2.0' in metrics


def test_cores_to_pin_to_are_checked_and_applied(monkeypatch):
    from serving.options import ServeOptions

    allowed = sorted(os.sched_getaffinity(0))
    monkeypatch.setenv("SHIPDELAY_SERVE_CPUS", str(allowed[-1]))
    assert ServeOptions.from_env().cpus == {allowed[-1]}
    assert_serve_option_refused(monkeypatch, "SHIPDELAY_SERVE_CPUS", ("x", "9999", ","))
    # applied in a process of its own: every thread, and one started afterwards, keeps to it
    code = ("import os, threading; from serving.options import pin_threads; "
            "t = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True); "
            f"t.start(); pin_threads(frozenset([{allowed[-1]}])); "
            "seen = [os.sched_getaffinity(int(x)) for x in os.listdir('/proc/self/task')]; "
            "later = []; u = threading.Thread(target=lambda: later.append(os.sched_getaffinity(0)));"
            " u.start(); u.join(); print(sorted(set(map(tuple, seen + later))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=True).stdout
    assert out.strip() == str([(allowed[-1],)])
