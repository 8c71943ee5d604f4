"""The HTTP contract of the prediction service, without a server: what a request may contain, and
how scorer output becomes per-shipment answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.schema import CATEGORICAL, TEXT_FEATURES, model_feature_names
from serving.api import (
    MAX_FEATURE_AGE_H,
    MAX_IDS,
    MAX_ROWS,
    MAX_SCAN_GAP_H,
    PredictFeaturesRequest,
    Prediction,
    PredictRequest,
    failed,
    predictions,
    row_problems,
    row_schema,
    stale_mask,
)


def _errors(model, body: str) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(body)
    return info.value.errors()


def _row(**overrides) -> dict:
    row = {f: ("truck" if f in {*CATEGORICAL, *TEXT_FEATURES} else 1.0) for f in model_feature_names()}
    return {**row, **overrides}


# ----------------------------------------------------------------------------- PredictRequest
def test_predict_request_accepts_distinct_ids():
    assert PredictRequest.model_validate_json('{"shipment_ids": ["a", "b"]}').shipment_ids == \
        ["a", "b"]


@pytest.mark.parametrize("body, loc, words", [
    ('{"shipment_ids": []}', ("shipment_ids",), "at least 1"),
    (json.dumps({"shipment_ids": [str(i) for i in range(MAX_IDS + 1)]}), ("shipment_ids",),
     f"at most {MAX_IDS}"),
    ('{"shipment_ids": ["a", "b", "a"]}', ("shipment_ids",), "duplicate shipment id(s): a"),
    ('{"shipment_ids": [""]}', ("shipment_ids", 0), "at least 1 character"),
    (json.dumps({"shipment_ids": ["x" * 65]}), ("shipment_ids", 0), "at most 64"),
    ('{"shipment_ids": [7]}', ("shipment_ids", 0), "valid string"),
    ('{"shipment_ids": "SH1"}', ("shipment_ids",), "valid array"),
    ('{"shipment_ids": null}', ("shipment_ids",), "valid array"),
    ('{}', ("shipment_ids",), "required"),
    ('{"shipment_ids": ["a"], "as_of": 1}', ("as_of",), "not permitted"),
    ('{"shipment_ids": ["a"', (), "Invalid JSON"),
])
def test_predict_request_errors_name_the_field(body, loc, words):
    errors = _errors(PredictRequest, body)
    assert any(tuple(e["loc"]) == loc and words in e["msg"] for e in errors), errors


# --------------------------------------------------------------------- PredictFeaturesRequest
def test_features_request_accepts_complete_rows_with_nulls():
    rows = [_row(slip_h=None, main_mode=None, shipment_id="S1"), _row(n_legs=3)]
    parsed = PredictFeaturesRequest.model_validate_json(json.dumps({"rows": rows}))
    assert parsed.rows[0]["slip_h"] is None and parsed.rows[1]["n_legs"] == 3


@pytest.mark.parametrize("row, words", [
    ({k: v for k, v in _row().items() if k != "slip_h"}, "missing model feature(s): slip_h"),
    (_row(slip_hours=1.0), "unknown field(s): slip_hours"),
    (_row(main_mode=3), "main_mode must be a string"),
    (_row(slip_h="late"), "slip_h must be a number"),
    (_row(shipment_id=""), "shipment_id must be a string"),
])
def test_features_request_errors_name_the_feature(row, words):
    errors = _errors(PredictFeaturesRequest, json.dumps({"rows": [_row(), row]}))
    assert errors[0]["loc"] == ("rows",) and "rows[1]" in errors[0]["msg"]
    assert words in errors[0]["msg"], errors


def test_features_request_refuses_booleans_and_non_finite_numbers():
    assert _errors(PredictFeaturesRequest, json.dumps({"rows": [_row(slip_h=True)]}))
    errors = _errors(PredictFeaturesRequest, json.dumps({"rows": [_row(slip_h=float("inf"))]}))
    assert "slip_h must be a finite number" in errors[0]["msg"]


def test_features_request_bounds_the_number_of_rows():
    assert "at least 1" in _errors(PredictFeaturesRequest, '{"rows": []}')[0]["msg"]
    body = json.dumps({"rows": [_row()] * (MAX_ROWS + 1)})
    assert f"at most {MAX_ROWS}" in _errors(PredictFeaturesRequest, body)[0]["msg"]


def test_row_problems_lists_everything_wrong():
    problems = row_problems({"slip_h": "x", "bogus": 1}, ["slip_h", "main_mode"])
    assert problems == ["missing model feature(s): main_mode", "unknown field(s): bogus",
                        "slip_h must be a number or null"]


def test_row_schema_states_the_contract():
    schema = row_schema()
    assert schema["required"] == model_feature_names()
    assert schema["properties"]["main_mode"]["anyOf"][0] == {"type": "string"}
    assert schema["properties"]["slip_h"]["anyOf"][0] == {"type": "number"}
    assert schema["additionalProperties"] is False
    rows_field = PredictFeaturesRequest.model_json_schema()["properties"]["rows"]
    assert rows_field["items"] == schema


# -------------------------------------------------------------------------------- answers
def test_stale_depends_on_the_current_mode():
    age = pd.Series([10.0, 100.0, 100.0, 600.0, 2000.0, np.nan, 100.0])
    mode = pd.Series(["air", "air", "ocean", "ocean", "ocean", "truck", None])
    assert stale_mask(age, mode).tolist() == [False, True, False, False, True, False, True]
    assert MAX_SCAN_GAP_H["ocean"] > MAX_SCAN_GAP_H["truck"] >= MAX_FEATURE_AGE_H
    assert stale_mask(age).tolist() == [False, True, True, True, True, False, True]


def _scored(**kw) -> pd.DataFrame:
    t = pd.Timestamp("2025-12-27 10:00", tz="UTC")
    row = {"shipment_id": "S1", "p_late": 0.7, "risk_band": "high", "delay_p50_h": 5.0,
           "delay_p90_h": 20.0, "eta": t, "eta_p10": t - pd.Timedelta(hours=2),
           "eta_p90": t + pd.Timedelta(hours=15), "model_version": "3",
           "reasons": ["running 5 h behind schedule at the last milestone"]}
    return pd.DataFrame([{**row, **kw}])


def test_predictions_carry_every_field_with_utc_iso_times():
    vectors = pd.DataFrame({"hours_since_last_scan": [200.0], "current_mode": ["truck"],
                            "main_mode": ["ocean"], "lane_id": ["L0007"],
                            "current_hub": ["H012"]})
    promised = pd.Timestamp("2025-12-27 04:30", tz="UTC")
    (item,) = predictions(_scored(promised_at=promised), vectors)
    body = json.loads(item.model_dump_json())
    assert body["status"] == "in_flight" and body["promised_at"] == "2025-12-27T04:30:00Z"
    assert body["mode"] == "truck"  # the current leg's, not the main one
    assert body["lane"] == "L0007" and body["current_hub"] == "H012"
    assert body["ok"] and body["error"] is None and body["model_version"] == "3"
    assert body["eta"] == "2025-12-27T10:00:00Z" and body["eta_p90"] == "2025-12-28T01:00:00Z"
    assert body["stale"] and "200 h" in body["warning"] and body["feature_age_h"] == 200.0
    assert body["reasons"] == ["running 5 h behind schedule at the last milestone"]


def test_predictions_turn_missing_values_into_nulls():
    (item,) = predictions(_scored(eta=pd.NaT, delay_p50_h=np.nan))
    assert item.ok and item.eta is None and item.delay_p50_h is None and not item.stale


def test_failed_items_say_why():
    item = failed("S9", "unknown shipment", "3")
    assert item == Prediction(shipment_id="S9", ok=False, error="unknown shipment",
                              model_version="3", status="unknown")
    assert item.p_late is None and item.reasons == []
    assert failed("S8", "already delivered").status == "delivered"


def test_mode_falls_back_to_the_main_one():
    vectors = pd.DataFrame({"current_mode": [None, "air"], "main_mode": ["rail", None]})
    items = predictions(pd.concat([_scored(), _scored(shipment_id="S2")], ignore_index=True),
                        vectors)
    assert [i.mode for i in items] == ["rail", "air"]
    assert predictions(_scored())[0].mode is None


def test_lane_and_hub_pass_through_and_are_null_when_not_read():
    vectors = {"lane_id": np.array(["L1", None], dtype=object),
               "current_hub": np.array([None, "H3"], dtype=object)}
    items = predictions(pd.concat([_scored(), _scored(shipment_id="S2")], ignore_index=True),
                        vectors)
    assert [(i.lane, i.current_hub) for i in items] == [("L1", None), (None, "H3")]
    what_if = predictions(_scored(), {"current_mode": np.array(["air"], dtype=object)})[0]
    assert what_if.lane is None and what_if.current_hub is None
    assert failed("S9", "unknown shipment").current_hub is None
