"""The Now list served a page at a time: the page sends 25 rows however many are in flight, and
the server's filter, sort and paging give the rows a pandas reference computes on its own from
the scores table and the lake (callbacks called over HTTP, as the browser calls them)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cockpit.app import create_app
from cockpit.money import Penalties, exposure
from shipdelay.parquet_io import read_frame
from tests.integration.test_cockpit_now import find
from tests.integration.test_cockpit_world import all_rows, cockpit_settings, in_flight, list_call


@pytest.fixture(scope="module")
def world(small_world, tmp_path_factory):
    lake, _ = small_world
    settings = cockpit_settings(tmp_path_factory.mktemp("cockpit-list") / "data", lake)
    scores = read_frame(next(settings.scores_dir.glob("run_date=*")))
    client = create_app(settings, follow_alerts=False).server.test_client()
    return settings, lake, scores, client


@pytest.fixture(scope="module")
def reference(world):
    """The scores with what the list shows, computed here from the lake: exposure, hours to
    the promise, hub names, the current hub's name and the names of the hubs still ahead."""
    settings, lake, scores, _ = world
    moving, now = in_flight(lake)
    ships = lake.read("shipments", columns=["shipment_id", "service_level", "promised_at"])
    ref = scores.merge(ships.astype({"shipment_id": object}), on="shipment_id", how="left")
    ref = exposure(ref, Penalties(settings.penalty_per_late, settings.penalty_per_hour))
    ref["hours_left"] = (ref["promised_at"] - now).dt.total_seconds() / 3600
    hubs = lake.read("hubs", columns=["hub_id", "name"])
    name = dict(zip(hubs["hub_id"].astype(str), hubs["name"].astype(str)))
    events = lake.read("tracking_events", columns=["shipment_id", "event_time", "ingested_at",
                                                   "hub_id"])
    events = events[(events["ingested_at"] <= now) & events["hub_id"].notna()]
    last = events.sort_values("event_time").groupby("shipment_id")["hub_id"].last()
    origin = dict(zip(moving["shipment_id"], moving["origin_hub"]))
    ref["hub"] = [name[str(last.get(s, origin[s]))] for s in ref["shipment_id"]]
    legs = lake.read("legs", columns=["shipment_id", "to_hub", "planned_arrival"])
    ahead = legs[legs["planned_arrival"] > now]
    ref["ahead"] = [set() for _ in range(len(ref))]
    goes = ahead.groupby("shipment_id")["to_hub"].apply(lambda h: {name[str(x)] for x in h})
    ref["ahead"] = [goes.get(s, set()) for s in ref["shipment_id"]]
    return ref


def test_the_page_sends_one_page_of_rows_not_the_list(world, reference):
    _, _, scores, client = world
    assert len(scores) > 100  # enough for several pages
    reply = client.post("/_dash-update-component", json={
        "output": "page.children", "outputs": {"id": "page", "property": "children"},
        "inputs": [{"id": "url", "property": "pathname", "value": "/"}],
        "changedPropIds": ["url.pathname"]})
    table = find(reply.get_json()["response"]["page"]["children"], "risk-table")
    assert len(table["data"]) == 25
    assert table["page_count"] == -(-len(scores) // 25)
    assert (table["page_action"], table["sort_action"], table["filter_action"]) == \
        ("custom", "custom", "custom")
    # the riskiest 25 by money at stake, computed here
    top = reference.sort_values("exposure", ascending=False)["shipment_id"].head(25).tolist()
    assert [r["id"] for r in table["data"]] == top
    # a page costs a few kilobytes of rows, not the list's (25 of len(scores) rows)
    assert len(json.dumps(table["data"])) < 25_000
    assert len(reply.data) < 40_000


@pytest.mark.parametrize("case", ["band", "numbers", "customer_mode", "hub"])
def test_server_filter_sort_and_pages_give_the_pandas_reference(world, reference, case):
    _, _, _, client = world
    ref = reference
    if case == "band":
        query, sort_by = "{band} scontains high", [{"column_id": "p_late_pct",
                                                     "direction": "asc"}]
        want = ref[ref["risk_band"] == "high"].sort_values("p_late")
    elif case == "numbers":
        query = "{p_late_pct} s>= 50 || {band} s= low"
        sort_by = [{"column_id": "customer", "direction": "asc"},
                   {"column_id": "promise", "direction": "desc"}]
        keep = ((ref["p_late"] * 100).round() >= 50) | (ref["risk_band"] == "low")
        want = ref[keep].sort_values(["customer", "hours_left"], ascending=[True, False])
    elif case == "customer_mode":
        customer = ref["customer"].value_counts().index[0]
        mode = ref.loc[ref["customer"] == customer, "mode"].iloc[0]
        query = f'{{customer}} s= "{customer}" && !({{mode}} ine "{mode.upper()}")'
        sort_by = [{"column_id": "eta", "direction": "desc"}]
        want = ref[(ref["customer"] == customer) & (ref["mode"] == mode)].sort_values(
            "eta", ascending=False)
    else:  # what a click on the busiest hub writes
        label = pd.Series([h for s in ref["ahead"] for h in s]).value_counts().index[0]
        query = f'{{hub}} = "{label}" || {{hubs_ahead}} contains "{label}"'
        sort_by = []
        keep = (ref["hub"] == label) | ref["ahead"].map(lambda s: label in s)
        want = ref[keep].sort_values("exposure", ascending=False)
    assert 0 < len(want) < len(ref)
    rows, first = all_rows(client, sort_by, query)
    assert rows["id"].tolist() == want["shipment_id"].tolist()
    assert first["risk-table"]["page_count"] == -(-len(want) // 25)
    # the counts by band and the money are those of the whole filtered set, not of a page
    bands = json.dumps(first["band-counts"]["children"])
    counts = want["risk_band"].value_counts()
    for band in ("high", "medium", "low"):
        assert f"{band}: {counts.get(band, 0):,}" in bands
    assert f"{want['exposure'].sum():,.0f}" in first["exposure-total"]["children"]
    assert f"{len(want):,} of {len(ref):,}" in first["now-matched"]["children"]


def test_a_new_filter_starts_on_its_first_page_and_a_bad_one_lists_all(world, reference):
    _, _, scores, client = world
    far = list_call(client, 5, None, "")
    assert far["risk-table"]["page_current"] == 5
    narrowed = list_call(client, 5, None, "{band} scontains high", changed="filter_query")
    assert narrowed["risk-table"]["page_current"] == 0
    beyond = list_call(client, 10_000, None, "")
    assert beyond["risk-table"]["page_current"] == -(-len(scores) // 25) - 1
    bad = list_call(client, 0, None, "{nothing} s= 3", changed="filter_query")
    assert "no column" in bad["now-matched"]["children"]
    assert bad["risk-table"]["page_count"] == -(-len(scores) // 25)


def test_the_map_shows_the_filtered_shipments(world, reference):
    _, _, _, client = world

    def hubs_on_map(query: str) -> set[str]:
        body = {"output": "hub-map.figure", "outputs": {"id": "hub-map", "property": "figure"},
                "inputs": [{"id": "map-horizon", "property": "value", "value": 72},
                           {"id": "risk-table", "property": "filter_query", "value": query}],
                "changedPropIds": ["risk-table.filter_query"]}
        figure = client.post("/_dash-update-component", json=body).get_json()["response"]
        trace = next(t for t in figure["hub-map"]["figure"]["data"]
                     if t.get("name") == "at-risk volume")
        return set(trace["customdata"])

    everything = hubs_on_map("")
    customer = reference["customer"].value_counts().index[-1]
    mine = reference[(reference["customer"] == customer)
                     & reference["risk_band"].isin(["high", "medium"])]
    few = hubs_on_map(f'{{customer}} s= "{customer}"')
    assert few < everything or len(everything) == len(few) == 0
    assert set(mine["hub"]) <= few
