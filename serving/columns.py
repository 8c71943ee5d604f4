"""Columns as numpy arrays, whatever they came as: the scorer's and the answers' one conversion.

A column reaches the scorer and the answer builder as a pandas Series (frames: the batch, the
what-if route) or as a numpy array (the online service's frame-free path); both are read the
same way here, so that the two paths cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def as_array(values) -> np.ndarray:
    """A column (pandas Series or array-like) as a numpy array."""
    return values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)


def as_numbers(values) -> np.ndarray:
    """A column as float64: numpy numbers as they are, anything else as pandas converts it
    (text that is not a number, None: NaN)."""
    array = as_array(values)
    if array.dtype.kind in "biuf":
        return array.astype(float, copy=False)
    return pd.to_numeric(pd.Series(array), errors="coerce").to_numpy(dtype=float)
