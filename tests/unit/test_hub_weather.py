"""Weather at a hub as a feature table: the newest observation known at each ingestion moment,
nothing before it is ingested, and an empty (but typed) table for a lake without weather."""

from __future__ import annotations

import pandas as pd
import pytest

from features.schema import HUB_WEATHER, TIMESTAMP
from features.tables import hub_weather
from shipdelay import contract


def _obs(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["hub_id", "observed_at", "ingested_at", "temperature_c"])
    for col in ("observed_at", "ingested_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    others = {c: float("nan") for c in contract.columns("hub_weather")[4:]}
    return contract.validate("hub_weather", frame.assign(**{**others, "wind_speed_kmh": 10.0}))


def test_each_row_counts_from_its_ingestion_and_stale_arrivals_never_win():
    table = hub_weather(_obs([
        ("JFK", "2013-01-01 10:00", "2013-01-01 10:05", 1.0),
        ("JFK", "2013-01-01 11:00", "2013-01-01 11:05", 2.0),
        ("JFK", "2013-01-01 09:00", "2013-01-01 12:00", 9.0),   # older, arrives late: ignored
        ("JFK", "2013-01-01 12:00", "2013-01-01 13:00", 3.0),   # two ingested at once:
        ("JFK", "2013-01-01 13:00", "2013-01-01 13:00", 4.0),   # the newer observation counts
        ("LGA", "2013-01-01 10:00", "2013-01-01 10:30", -1.0),
    ]))
    assert list(table.columns) == ["hub_id", TIMESTAMP, *HUB_WEATHER]
    jfk = table[table["hub_id"] == "JFK"]
    assert list(jfk[TIMESTAMP].dt.strftime("%H:%M")) == ["10:05", "11:05", "13:00"]
    assert list(jfk["weather_temperature_c"]) == [1.0, 2.0, 4.0]
    assert (jfk["weather_wind_kmh"] == 10.0).all() and jfk["weather_gust_kmh"].isna().all()
    assert table.loc[table["hub_id"] == "LGA", "weather_temperature_c"].tolist() == [-1.0]


def test_start_keeps_only_rows_ingested_from_then_on():
    table = hub_weather(_obs([("JFK", "2013-01-01 10:00", "2013-01-01 10:05", 1.0),
                              ("JFK", "2013-01-02 10:00", "2013-01-02 10:05", 2.0)]),
                        start="2013-01-02")
    assert table["weather_temperature_c"].tolist() == [2.0]


def test_a_lake_without_weather_gives_an_empty_typed_table():
    empty = contract.validate("hub_weather",
                              pd.DataFrame({c: [] for c in contract.columns("hub_weather")}))
    table = hub_weather(empty)
    assert table.empty and list(table.columns) == ["hub_id", TIMESTAMP, *HUB_WEATHER]
    assert str(table[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert all(table[c].dtype == "float64" for c in HUB_WEATHER)


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("wind_speed_kmh", 1687.0, "in_range(0, 400)"),
    ("pressure_hpa", 200.0, "in_range(850, 1100)"),
])
def test_impossible_readings_break_the_contract(column, value, reason):
    frame = _obs([("JFK", "2013-01-01 10:00", "2013-01-01 10:05", 1.0)]).assign(**{column: value})
    with pytest.raises(Exception, match=reason.replace("(", r"\(").replace(")", r"\)")):
        contract.validate("hub_weather", frame)
