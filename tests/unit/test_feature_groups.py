"""Feature groups and feature sets: every FeatureService feature in one named group, a dropped
group gives a FeatureService name of its own that says what it leaves out, bad group names are
refused naming the valid ones; and the split a run chooses (dates, shares, gap) is the split
it gets, with a clear error when it cannot fit the data."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.feature_sets import UnknownFeatureGroup, choose, from_service
from features.online import FeatureServiceMismatch
from features.schema import (
    FEATURE_GROUP_NAMES,
    FEATURE_SERVICE,
    HUB_WEATHER,
    MODEL_FEATURES,
    SHIPMENT_PROFILE,
    feature_groups,
    model_feature_names,
    model_input_names,
)
from serving.model_holder import check_servable
from tests.unit.test_cli_errors import ANSI
from training.split import SplitError, time_split
from training.train import SplitOptions


def test_every_feature_is_in_exactly_one_group():
    groups = feature_groups()
    assert tuple(groups) == FEATURE_GROUP_NAMES
    listed = [f for cols in groups.values() for f in cols]
    assert sorted(listed) == sorted(model_feature_names())
    assert len(listed) == len(set(listed))
    # the groups a company most often turns off hold what their names say
    assert groups["weather"] == list(HUB_WEATHER)
    assert set(groups["calendar"]) == {c for c in SHIPMENT_PROFILE if c.startswith("booked_")
                                       and c in MODEL_FEATURES["shipment_profile"]}
    assert groups["notes"] and all("note" in f for f in groups["notes"])


def test_a_feature_set_names_its_service_after_what_it_drops():
    full = choose(None)
    assert full.service == FEATURE_SERVICE and full.features == model_feature_names()
    assert full.model_inputs == model_input_names()
    chosen = choose("weather, calendar")
    assert chosen == choose(["calendar", "weather"])  # the same choice, the same name
    assert chosen.service == f"{FEATURE_SERVICE}__no_calendar_weather"
    gone = set(feature_groups()["calendar"]) | set(HUB_WEATHER)
    assert chosen.features == [f for f in model_feature_names() if f not in gone]
    assert "hub_weather" not in chosen.by_view()  # a view with nothing left is left out
    # the name gives the feature set back, group names with underscores too
    for dropped in [(g,) for g in FEATURE_GROUP_NAMES] + [("calendar", "on_demand"),
                                                           ("weather", "notes", "customer")]:
        fs = choose(dropped)
        assert from_service(fs.service) == fs
    with pytest.raises(ValueError, match="unknown feature group"):
        from_service(f"{FEATURE_SERVICE}__no_moon")
    with pytest.raises(ValueError, match="not a feature set"):
        from_service("other_model_v2")


def test_a_bad_group_name_is_refused_naming_the_valid_ones():
    with pytest.raises(UnknownFeatureGroup) as err:
        choose("calendar,wether")
    message = str(err.value)
    assert "wether" in message and all(g in message for g in FEATURE_GROUP_NAMES)
    with pytest.raises(ValueError, match="nothing to learn"):
        choose(",".join(FEATURE_GROUP_NAMES))


def _spec(service: str, features: list[str]):
    """A bundle as check_servable sees it: its FeatureService and the features it reads."""
    return types.SimpleNamespace(version="9", spec=types.SimpleNamespace(
        service=service, inputs=features))


def test_serving_takes_a_subset_model_and_refuses_a_mismatch():
    chosen = choose("calendar,weather")
    check_servable(_spec(chosen.service, chosen.features), None)  # a subset: servable
    check_servable(_spec(FEATURE_SERVICE, chosen.features), None)  # fewer than the full list
    with pytest.raises(FeatureServiceMismatch, match="booked_hour"):  # more than its service
        check_servable(_spec(chosen.service, [*chosen.features, "booked_hour"]), None)
    with pytest.raises(FeatureServiceMismatch, match="other_model"):
        check_servable(_spec("other_model", chosen.features), None)


def _bookings(days: int = 100, per_day: int = 20, transit_days: float = 3.0) -> pd.DataFrame:
    booked = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(
        np.linspace(0, days, days * per_day, endpoint=False), unit="D")
    return pd.DataFrame({"booked_at_s": booked.astype("int64") / 1e9,
                         "delivered_at": booked + pd.Timedelta(days=transit_days)})


def test_a_split_from_dates_with_a_chosen_gap():
    frame = _bookings()
    split = time_split(frame, test_from="2025-03-20", valid_from="2025-02-20",
                       gap=pd.Timedelta(days=2))
    b = split.bounds
    assert b["test_start"] == pd.Timestamp("2025-03-20", tz="UTC")
    assert b["valid_start"] == pd.Timestamp("2025-02-20", tz="UTC")
    assert b["valid_end"] == pd.Timestamp("2025-03-18", tz="UTC")
    assert b["train_end"] == pd.Timestamp("2025-02-18", tz="UTC")
    booked = pd.to_datetime(split.test["booked_at_s"], unit="s", utc=True)
    assert booked.min() >= b["test_start"] and len(split.test) == (booked >= b["test_start"]).sum()
    # labels never cross into the next window, however short the gap
    assert (split.train["delivered_at"] < b["valid_start"]).all()
    assert (split.valid["delivered_at"] < b["test_start"]).all()
    # the default gap is the label horizon plus a day
    default = time_split(frame)
    assert default.gaps[0] == default.horizon + pd.Timedelta(days=1) == pd.Timedelta(days=4)


@pytest.mark.parametrize("kwargs, option, words", [
    ({"test_from": "2026-01-01"}, "--test-from", "within the bookings"),
    ({"test_from": "2025-03-20", "valid_from": "2025-03-19"}, "--valid-from",
     "leaves no validation window"),
    ({"test_from": "2025-01-10"}, "--valid-from", "not enough history"),
    ({"test_from": "2025-03-20", "gap": pd.Timedelta(days=-1)}, "--gap-days", "negative"),
])
def test_a_split_that_cannot_fit_says_why(kwargs, option, words):
    with pytest.raises(SplitError, match=words) as err:
        time_split(_bookings(), **kwargs)
    assert err.value.param == option


def test_split_options_refuse_what_cannot_work_before_any_data():
    with pytest.raises(SplitError, match="before --test-from") as err:
        SplitOptions(test_from="2025-03-01", valid_from="2025-04-01")
    assert err.value.param == "--valid-from"
    with pytest.raises(SplitError, match="not a date"):
        SplitOptions(test_from="March")
    with pytest.raises(SplitError, match="below 1"):
        SplitOptions(test_share=0.5, valid_share=0.5)
    with pytest.raises(SplitError, match="0 days or more"):
        SplitOptions(gap_days=-2)
    params = SplitOptions(test_from="2025-03-20", gap_days=2).params()
    assert params["split.test_from"] == "2025-03-20" and params["split.gap_days"] == "2"
    assert params["split.test_share"] == "" and params["split.valid_share"] == "0.15"


@pytest.mark.parametrize("args, option, words", [
    (["--drop-features", "calendar,wether"], "--drop-features", "calendar, weather, notes"),
    (["--test-from", "2025-03-01", "--valid-from", "2025-04-01"], "--valid-from",
     "must be before --test-from"),
    (["--gap-days", "two"], "--gap-days", "not a number of days"),
])
def test_shipdelay_train_refuses_bad_choices_in_one_message(data_dir, args, option, words):
    from shipdelay.cli import app

    result = CliRunner().invoke(app, ["train", *args])
    out = result.output
    assert result.exit_code == 2, out  # refused before anything is read: the folder is empty
    flat = " ".join(out.replace("\u2502", " ").split())  # the message box's lines as one text
    assert option in flat and words in flat, out
    assert "Traceback" not in out and not ANSI.search(out)
