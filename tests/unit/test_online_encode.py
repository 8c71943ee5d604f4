"""The online store's value encoder (`features.online_direct.encode`) against Feast's own
converter (`feast.type_map.python_values_to_proto_values`): the same bytes for every kind a view
writes, the plan's lists included, with the values nobody sends on purpose (NaN inside a list,
an empty list, a missing list, text outside ASCII, infinities). The plan's lists come from DuckDB's
DOUBLE[] and VARCHAR[] columns; Feast refuses a float list of Python ints, so that is not compared."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from features.online_direct import encode

LISTS = {
    "float_list": (ValueType.DOUBLE_LIST, [np.array([1.5, np.nan, -3.0]), [], None,
                                           np.array([], dtype=float), np.nan,
                                           np.array([1e300, -0.0, np.inf])]),
    "str_list": (ValueType.STRING_LIST, [np.array(["HUB-1", "HUB-2"], dtype=object), [], None,
                                         ["é", "海", ""], np.array([], dtype=object)]),
}


def _feast(values: list, value_type: ValueType) -> list[bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        protos = python_values_to_proto_values(np.array(values, dtype=object), value_type)
    return [p.SerializeToString() for p in protos]


@pytest.mark.parametrize("kind", sorted(LISTS))
def test_list_values_are_the_bytes_feast_writes(kind):
    value_type, values = LISTS[kind]
    column = pd.Series(values, dtype=object)
    # Feast's converter takes no missing values among lists: they are compared one by one
    for i, v in enumerate(values):
        missing = v is None or (isinstance(v, float) and np.isnan(v))
        expected = [b""] if missing else _feast([v], value_type)
        assert encode(column.iloc[i:i + 1], kind) == expected, f"value {i}: {v!r}"
    present = [v for v in values if not (v is None or isinstance(v, float))]
    assert encode(pd.Series(present, dtype=object), kind) == _feast(present, value_type)


def test_random_plans_are_the_bytes_feast_writes():
    rng = np.random.default_rng(3)
    floats = [rng.normal(size=rng.integers(0, 12)) * 1e9 for _ in range(500)]
    texts = [np.array([f"H{x}" for x in rng.integers(0, 999, rng.integers(0, 9))], dtype=object)
             for _ in range(500)]
    assert encode(pd.Series(floats, dtype=object), "float_list") == \
        _feast(floats, ValueType.DOUBLE_LIST)
    assert encode(pd.Series(texts, dtype=object), "str_list") == \
        _feast(texts, ValueType.STRING_LIST)
