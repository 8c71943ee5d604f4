"""The Now list's filter language, run on the server: each query against a mask written by hand
with pandas on a small frame (text, numbers, missing values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cockpit.query import FilterError, evaluate, parse

FRAME = pd.DataFrame({
    "band": ["high", "low", "medium", "high", None, "High"],
    "customer": ["CU001", "CU002", "CU001", "CU0012", "CU003", "CU001"],
    "hub": ["Port of Rotterdam", "Chicago Rail", None, "Port of Rotterdam", "Lyon", ""],
    "p_late_pct": [81.0, 12.0, 45.0, np.nan, 60.0, 99.0],
})


def rows(query: str) -> list[int]:
    return np.flatnonzero(evaluate(parse(query), FRAME)).tolist()


def expect(mask: pd.Series) -> list[int]:
    return np.flatnonzero(mask.eq(True).to_numpy()).tolist()


@pytest.mark.parametrize(("query", "mask"), [
    # what the column boxes write: scontains for text, s= / s> for numbers
    ("{band} scontains high", FRAME["band"].str.contains("high", regex=False)),
    ("{band} icontains HIGH", FRAME["band"].str.lower().str.contains("high", regex=False)),
    ("{p_late_pct} s> 50", FRAME["p_late_pct"] > 50),
    ("{p_late_pct} s= 45", FRAME["p_late_pct"] == 45),
    ("{p_late_pct} <= 60 && {p_late_pct} ge 45", FRAME["p_late_pct"].between(45, 60)),
    ("{p_late_pct} scontains 9", pd.Series([False, False, False, False, False, True])),
    ('{customer} s= "CU001"', FRAME["customer"] == "CU001"),
    ("{customer} = CU001", FRAME["customer"] == "CU001"),
    ("{customer} contains CU001", FRAME["customer"].str.contains("CU001", regex=False)),
    ("{customer} datestartswith CU00", FRAME["customer"].str.startswith("CU00")),
    # what a click on a hub writes
    ('{hub} = "Port of Rotterdam" || {customer} contains \'CU002\'',
     (FRAME["hub"] == "Port of Rotterdam") | (FRAME["customer"] == "CU002")),
    ("!({band} = high) && {p_late_pct} > 10",
     ~(FRAME["band"] == "high") & (FRAME["p_late_pct"] > 10)),
    ("({band} = low or {band} = medium) and {customer} != CU002",
     FRAME["band"].isin(["low", "medium"]) & (FRAME["customer"] != "CU002")),
    ("{band} ine HIGH", ~FRAME["band"].str.lower().eq("high") | FRAME["band"].isna()),
    ("{band} is nil", FRAME["band"].isna()),
    ("{hub} is blank", FRAME["hub"].isna() | (FRAME["hub"] == "")),
    ("{p_late_pct} is num", FRAME["p_late_pct"].notna()),
    ("{band} != high", FRAME["band"].ne("high")),  # a missing band is not "high"
    ('{hub} = "Port of \\"R\\""', pd.Series([False] * 6)),
])
def test_a_query_keeps_the_rows_pandas_keeps(query, mask):
    assert rows(query) == expect(mask)


def test_no_filter_keeps_everything_and_a_number_never_equals_text():
    assert rows("") == list(range(6))
    assert evaluate(parse(None), FRAME).all()
    assert rows("{p_late_pct} = high") == []


@pytest.mark.parametrize("query", ["{band} scontains", "{band} like x", "band = high",
                                   "({band} = high", "{band} = high )", "{band} is even",
                                   "{nothing} = 1"])
def test_what_cannot_be_read_is_a_filter_error(query):
    with pytest.raises(FilterError):
        evaluate(parse(query), FRAME)
