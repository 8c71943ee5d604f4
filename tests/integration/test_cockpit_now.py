"""The cockpit over the small simulated world with a nightly scores table: the Now page against
the table and the lake, the service's answers refreshing the rows shown, one shipment's page,
alerts arriving, the API key. Pages and callbacks are called over HTTP (Flask's test client).
The list's paging, sorting and filtering are in `test_cockpit_list`."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from cockpit.app import create_app
from cockpit.money import Penalties, exposure
from shipdelay.parquet_io import read_frame
from tests.integration.test_cockpit_world import (
    REASON,
    all_rows,
    cockpit_settings,
    in_flight,
    list_call,
)


@pytest.fixture(scope="module")
def world(small_world, tmp_path_factory):
    lake, _ = small_world
    settings = cockpit_settings(tmp_path_factory.mktemp("cockpit") / "data", lake)
    scores = read_frame(next(settings.scores_dir.glob("run_date=*")))
    return settings, lake, scores


def route(client, path: str, headers=None):
    """What the page callback answers for `path` (the JSON of the page's children)."""
    body = {"output": "page.children", "outputs": {"id": "page", "property": "children"},
            "inputs": [{"id": "url", "property": "pathname", "value": path}],
            "changedPropIds": ["url.pathname"]}
    return client.post("/_dash-update-component", json=body, headers=headers or {})


def find(tree, element_id: str):
    """The props of the element with `element_id` in a Dash component tree."""
    if isinstance(tree, dict):
        props = tree.get("props", {})
        if props.get("id") == element_id:
            return props
        tree = list(tree.values())
    if isinstance(tree, list):
        for child in tree:
            hit = find(child, element_id)
            if hit is not None:
                return hit
    return None


def page(client, path: str, headers=None) -> dict:
    reply = route(client, path, headers)
    assert reply.status_code == 200, reply.data[:300]
    return reply.get_json()["response"]["page"]["children"]


def test_now_page_counts_lists_and_words_match_the_table_and_the_lake(world):
    settings, lake, scores = world
    client = create_app(settings, follow_alerts=False).server.test_client()
    now = page(client, "/")
    counts = scores["risk_band"].value_counts()
    for band in ("high", "medium", "low"):
        assert find(now, f"band-count-{band}")["children"] == f"{band}: {counts.get(band, 0):,}"
    first = pd.DataFrame(find(now, "risk-table")["data"])
    rows, _ = all_rows(client)
    assert rows["id"].head(25).tolist() == first["id"].tolist()
    assert sorted(rows["id"]) == sorted(scores["shipment_id"])
    # ranked by exposure, computed here from the scores and the shipments' service levels
    levels = lake.read("shipments", columns=["shipment_id", "service_level"])
    mine = exposure(scores.merge(levels.astype({"shipment_id": object}), on="shipment_id"),
                    Penalties(settings.penalty_per_late, settings.penalty_per_hour))
    top = mine.sort_values("exposure", ascending=False)["shipment_id"].head(10).tolist()
    assert rows["id"].head(10).tolist() == top
    # names, not codes: every hub shown is a hub's name from the hubs table
    hubs = lake.read("hubs", columns=["hub_id", "name"])
    assert set(rows["hub"]) <= set(hubs["name"])
    # overdue in words, for exactly the shipments whose promise has passed
    moving, t = in_flight(lake)
    late = set(moving.loc[moving["promised_at"] < t - pd.Timedelta(minutes=30), "shipment_id"])
    said = set(rows.loc[rows["promise"].str.endswith("overdue"), "id"])
    assert said == late and all(not p.startswith("-") for p in rows["promise"])
    assert all("." not in d for d in rows["delay"])  # whole hours


class FakeService:
    """A prediction service on a free port: every asked shipment is high risk."""

    def __init__(self):
        self.asked: list[list[str]] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @Request.application
    def app(self, request):
        ids = json.loads(request.data)["shipment_ids"]
        self.asked.append(ids)
        answers = [{"shipment_id": i, "ok": True, "p_late": 0.99, "risk_band": "high",
                    "delay_p50_h": 30.0, "delay_p90_h": 60.0, "eta": "2025-12-01T00:00:00Z",
                    "eta_p10": "2025-11-30T00:00:00Z", "eta_p90": "2025-12-02T00:00:00Z",
                    "reasons": ["a fresh reason"], "model_version": "7"} for i in ids]
        return Response(json.dumps(answers), mimetype="application/json")


def test_the_rows_shown_are_refreshed_from_the_service(world):
    settings, _, _ = world
    service = FakeService()
    try:
        client = create_app(settings, service.url, follow_alerts=False).server.test_client()
        rows = pd.DataFrame(find(page(client, "/"), "risk-table")["data"])
        asked = service.asked[0]
        assert len(asked) == 25 and rows["id"].tolist() == asked
        assert set(rows["source"]) == {"service"} and set(rows["p_late_pct"]) == {99.0}
        # the next page asks the service for its own 25 rows, the button asks again
        second = list_call(client, 1)["risk-table"]["data"]
        assert service.asked[-1] == [r["id"] for r in second] and not set(asked) & set(
            service.asked[-1])
        assert {r["source"] for r in second} == {"service"}
        again = list_call(client, 1, changed="refresh-visible.n_clicks", clicks=1)
        assert service.asked[-1] == [r["id"] for r in second]
        assert "25 row(s) refreshed" in again["now-service"]["children"]
        service_page = page(client, f"/shipment/{asked[0]}")
        assert find(service_page, "shipment-reasons")["children"][0]["props"]["children"] \
            == "a fresh reason"
    finally:
        service.server.shutdown()


def test_shipment_page_itinerary_interval_reasons_and_events(world):
    settings, lake, scores = world
    client = create_app(settings, follow_alerts=False).server.test_client()
    high = scores[scores["risk_band"] == "high"].iloc[0]
    shown = page(client, f"/shipment/{high['shipment_id']}")
    legs = lake.read("legs", columns=["shipment_id"])
    itinerary = find(shown, "shipment-itinerary")["data"]
    assert len(itinerary) == int((legs["shipment_id"] == high["shipment_id"]).sum())
    reasons = find(shown, "shipment-reasons")["children"]
    assert [r["props"]["children"] for r in reasons] == [REASON]
    interval = find(shown, "shipment-interval")["children"]
    assert high["eta_p10"].strftime("%a %d %b %H:%M") in interval
    assert high["eta_p90"].strftime("%a %d %b %H:%M") in interval
    events = lake.read("tracking_events", columns=["shipment_id", "ingested_at"])
    _, t = in_flight(lake)
    mine = events[(events["shipment_id"] == high["shipment_id"]) & (events["ingested_at"] <= t)]
    assert len(find(shown, "shipment-events")["data"]) == len(mine)
    missing = page(client, "/shipment/NOT-A-SHIPMENT")
    assert "No shipment NOT-A-SHIPMENT" in find(missing, "shipment-missing")["children"]


def test_new_alerts_appear_at_the_next_poll(world):
    settings, _, _ = world
    app = create_app(settings, follow_alerts=False)
    client = app.server.test_client()
    body = {"output": "..alert-inbox.data...alert-status.children..",
            "outputs": [{"id": "alert-inbox", "property": "data"},
                        {"id": "alert-status", "property": "children"}],
            "inputs": [{"id": "alert-poll", "property": "n_intervals", "value": 1}],
            "changedPropIds": ["alert-poll.n_intervals"]}
    first = client.post("/_dash-update-component", json=body).get_json()["response"]
    assert first["alert-inbox"]["data"] == []
    app.alert_follower.add([json.dumps({
        "alert_id": "S9@x", "shipment_id": "S9", "kind": "threshold", "p_late": 0.8,
        "previous_p_late": 0.5, "as_of": "2025-11-29T12:00:00Z", "reasons": ["late"]}).encode()])
    second = client.post("/_dash-update-component", json=body).get_json()["response"]
    assert [r["shipment_id"] for r in second["alert-inbox"]["data"]] == ["S9"]
    assert second["alert-inbox"]["data"][0]["risk"] == "50% → 80%"


def test_with_a_key_nothing_opens_without_it(world, small_world, tmp_path):
    lake, _ = small_world
    settings = cockpit_settings(tmp_path / "data", lake, api_key="s3cret-key")
    client = create_app(settings, follow_alerts=False).server.test_client()
    assert client.get("/").status_code == 302 and client.get("/").location.endswith("/login")
    assert route(client, "/").status_code == 401
    assert client.get("/_dash-layout").status_code == 401
    assert client.get("/_dash-dependencies").status_code == 401
    assert b'id="login-form"' in client.get("/login").data
    wrong = client.post("/login", data={"key": "guess"})
    assert wrong.status_code == 401 and b"not the service" in wrong.data
    assert route(client, "/").status_code == 401
    right = client.post("/login", data={"key": "s3cret-key"})
    assert right.status_code == 302
    cookie = right.headers["Set-Cookie"]
    assert "s3cret-key" not in cookie and "HttpOnly" in cookie
    assert client.get("/").status_code == 200 and route(client, "/").status_code == 200
    client.get("/logout")
    assert route(client, "/").status_code == 401
    other = create_app(settings, follow_alerts=False).server.test_client()
    assert route(other, "/", headers={"X-API-Key": "s3cret-key"}).status_code == 200
    assert route(other, "/", headers={"X-API-Key": "s3cret-kez"}).status_code == 401


def test_the_page_fetches_nothing_from_outside(world):
    settings, _, _ = world
    client = create_app(settings, follow_alerts=False).server.test_client()
    index = client.get("/").data.decode()
    srcs = [s.split('"')[0] for s in index.split('src="')[1:]]
    hrefs = [s.split('"')[0] for s in index.split('href="')[1:]]
    assert srcs and all(s.startswith("/") for s in srcs + hrefs), srcs + hrefs
    for src in srcs:
        assert client.get(src).status_code == 200, src
    assert np.all(["http" not in json.dumps(page(client, "/"))])


def _callback(client, output: str, prop: str, inputs: list[dict]) -> dict:
    body = {"output": f"{output}.{prop}", "outputs": {"id": output, "property": prop},
            "inputs": inputs, "changedPropIds": [f"{i['id']}.{i['property']}" for i in inputs]}
    reply = client.post("/_dash-update-component", json=body)
    assert reply.status_code == 200, reply.data[:300]
    return reply.get_json()["response"][output][prop]


def test_the_map_sizes_hubs_by_horizon_and_a_click_filters_the_list(world):
    settings, lake, _ = world
    client = create_app(settings, follow_alerts=False).server.test_client()
    traces = {}
    for horizon in (24, 72):
        figure = _callback(client, "hub-map", "figure",
                           [{"id": "map-horizon", "property": "value", "value": horizon},
                            {"id": "risk-table", "property": "filter_query", "value": ""}])
        traces[horizon] = next(t for t in figure["data"] if t.get("name") == "at-risk volume")
    names = set(lake.read("hubs", columns=["name"])["name"])
    assert set(traces[24]["customdata"]) <= names
    assert set(traces[24]["customdata"]) <= set(traces[72]["customdata"])
    # every hub where an at-risk shipment is now is on the map
    rows, _ = all_rows(client)
    assert set(rows.loc[rows["band"].isin(["high", "medium"]), "hub"]) <= \
        set(traces[24]["customdata"])
    label = traces[24]["customdata"][0]
    query = _callback(client, "risk-table", "filter_query",
                      [{"id": "hub-map", "property": "clickData",
                        "value": {"points": [{"customdata": label}]}},
                       {"id": "clear-filter", "property": "n_clicks", "value": None}])
    assert query == f'{{hub}} = "{label}" || {{hubs_ahead}} contains "{label}"'
    body = {"output": "risk-table.filter_query",
            "outputs": {"id": "risk-table", "property": "filter_query"},
            "inputs": [{"id": "hub-map", "property": "clickData",
                        "value": {"points": [{"customdata": label}]}},
                       {"id": "clear-filter", "property": "n_clicks", "value": 1}],
            "changedPropIds": ["clear-filter.n_clicks"]}  # "Show all" after the click
    cleared = client.post("/_dash-update-component", json=body).get_json()["response"]
    assert cleared["risk-table"]["filter_query"] == ""


def test_analytics_page_and_its_csv_agree_with_the_outcomes(world):
    settings, lake, _ = world
    client = create_app(settings, follow_alerts=False).server.test_client()
    shown = page(client, "/analytics")
    table = pd.DataFrame(find(shown, "analytics-table")["data"])
    # independently: deliveries of the 12 weeks before the lake's now, per customer
    _, t = in_flight(lake)
    outcomes = lake.read("outcomes", columns=["shipment_id", "delivered_at", "is_late"])
    outcomes = outcomes[(outcomes["delivered_at"] > t - pd.Timedelta(weeks=12))
                        & (outcomes["delivered_at"] <= t)]
    ships = lake.read("shipments", columns=["shipment_id", "customer_id"])
    mine = outcomes.merge(ships, on="shipment_id").groupby("customer_id")["is_late"]
    assert sorted(table["customer"]) == sorted(mine.size().index)
    one = table.iloc[0]
    assert one["shipments"] == mine.size()[one["customer"]]
    assert np.isclose(one["late_%"], round(mine.mean()[one["customer"]] * 100, 1))
    assert find(shown, "carrier-scorecard")["data"] and find(shown, "hub-days") is not None
    body = {"output": "analytics-download.data",
            "outputs": {"id": "analytics-download", "property": "data"},
            "inputs": [{"id": "analytics-export", "property": "n_clicks", "value": 1}],
            "state": [{"id": "analytics-by", "property": "value", "value": "market"}],
            "changedPropIds": ["analytics-export.n_clicks"]}
    sent = client.post("/_dash-update-component", json=body).get_json()["response"]
    csv = sent["analytics-download"]["data"]
    assert csv["filename"] == "shipdelay-market.csv" and not csv["base64"]
    lines = csv["content"].strip().splitlines()
    assert lines[0].startswith("market,shipments,late_%")
    assert len(lines) - 1 == len(breakdown_markets(lake, outcomes))


def breakdown_markets(lake, outcomes) -> set[str]:
    """The markets (origin region -> destination region) of `outcomes`, from the lake."""
    ships = lake.read("shipments", columns=["shipment_id", "origin_hub", "destination_hub"])
    hubs = lake.read("hubs", columns=["hub_id", "region"])
    region = dict(zip(hubs["hub_id"], hubs["region"]))
    both = outcomes.merge(ships, on="shipment_id")
    return set(both["origin_hub"].map(region) + " → " + both["destination_hub"].map(region))


def test_health_shows_versions_and_the_monitor_summary_when_there_is_one(world):
    settings, _, _ = world
    service = FakeService()
    try:
        client = create_app(settings, service.url, follow_alerts=False).server.test_client()
        summary = settings.reports_dir / "monitor" / "latest.json"
        summary.unlink(missing_ok=True)
        shown = page(client, "/health")
        versions = json.dumps(find(shown, "health-versions"))
        assert "model version 3, run" in versions and "model version 7" in versions
        assert "run `shipdelay monitor`" in find(shown, "health-monitor")["children"]
        assert "Feature store: not built yet" in find(shown, "health-features")["children"]
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps({
            "as_of": "2025-11-29T00:00:00Z", "days": 30, "should_retrain": True,
            "headline": {"roc_auc": 0.8123, "coverage_p10_p90": 0.78, "logged": 12345.0,
                         "prediction_psi": float("nan")},
            "alarms": [{"kind": "drift", "slice": "overall", "metric": "psi", "value": 0.4,
                        "threshold": 0.25, "message": "hours_since_last_scan drifted"}]}))
        shown = page(client, "/health")
        figures = {r["figure"]: r["value"] for r in find(shown, "health-figures")["data"]}
        assert figures == {"ROC AUC (realized)": "0.812",
                           "share of deliveries inside P10-P90": "78%",
                           "predictions logged": "12,345"}
        assert find(shown, "health-alarms")["data"][0]["message"] == \
            "hours_since_last_scan drifted"
        assert "a new model is advised" in find(shown, "health-monitor")["children"]
    finally:
        service.server.shutdown()


def test_the_shipment_page_draws_its_logged_risk_over_time(world):
    from monitoring.prediction_log import prediction_table, write_predictions

    settings, _, scores = world
    shipment = scores["shipment_id"].iloc[3]
    t0 = pd.Timestamp("2025-11-20T00:00:00Z")
    for door, hours, p in (("batch", [0, 24], [0.2, 0.3]), ("stream", [30, 36], [0.5, 0.7])):
        instants = [t0 + pd.Timedelta(hours=h) for h in hours]
        scored = {"shipment_id": [shipment, shipment], "p_late": p,
                  "delay_p50_h": [1.0, 2.0], "delay_p90_h": [5.0, 6.0],
                  "eta": pd.Series(instants), "eta_p10": pd.Series(instants),
                  "eta_p90": pd.Series(instants), "model_version": ["3", "3"]}
        table = prediction_table(door, scored, {}, instants)
        write_predictions(settings.predictions_dir, table)
        write_predictions(settings.predictions_dir, table)  # a replayed write: same forecasts
    client = create_app(settings, follow_alerts=False).server.test_client()
    figure = find(page(client, f"/shipment/{shipment}"), "shipment-risk")["figure"]
    lines = {t["name"]: t for t in figure["data"]}
    assert set(lines) == {"batch", "stream"}
    ys = {name: np.round(numbers(t["y"])).tolist() for name, t in lines.items()}
    assert ys == {"batch": [20, 30], "stream": [50, 70]}


def numbers(values) -> np.ndarray:
    """A figure's array as numbers: plotly sends numpy arrays as base64 typed arrays."""
    if isinstance(values, dict):
        import base64

        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values, dtype=float)
