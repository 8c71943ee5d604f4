"""The one scorer: feature vectors in, everything operations want to know out.

Probability of being late (calibrated), a risk band, P50 and P90 delay hours, the predicted
delivery time with its P10-P90 interval, three reasons in plain words and the model version.
The online service, the stream scorer and the nightly batch all call `Scorer.score`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from serving.reasons import top_reasons
from training.bundle import Bundle


@dataclass(frozen=True)
class Thresholds:
    high: float = 0.6
    medium: float = 0.3


def _hours(hours: np.ndarray) -> np.ndarray:
    """Hours as nanosecond durations (NaN: NaT), one numpy cast: several times faster than
    `pd.to_timedelta(unit="h")` on a million rows."""
    return (np.asarray(hours, dtype=float) * 3.6e12).astype("m8[ns]")


class Scorer:
    def __init__(self, bundle: Bundle, thresholds: Thresholds = Thresholds()):
        self.bundle = bundle
        self.thresholds = thresholds
        spec = bundle.spec
        self._levels = {c: pd.Index(levels) for c, levels in spec.categories.items()}

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def features(self) -> list[str]:
        return self.bundle.spec.features

    def band(self, p: np.ndarray) -> np.ndarray:
        return np.where(p >= self.thresholds.high, "high",
                        np.where(p >= self.thresholds.medium, "medium", "low"))

    def matrix(self, vectors: pd.DataFrame) -> np.ndarray:
        """`spec.matrix(vectors)` as one float64 array, the same values built in bulk: numeric
        columns of numpy dtypes copied as they are, the others converted exactly as the spec
        does; categoricals as codes of the training levels (NaN when unseen or missing).
        Column-major, so that each column is one contiguous copy (LightGBM predicts from either
        layout without a copy and at the same speed)."""
        spec = self.bundle.spec
        missing = [c for c in spec.features if c not in vectors]
        if missing:
            return spec.matrix(vectors).to_numpy(dtype=float)  # raises, naming the features
        X = np.empty((len(vectors), len(spec.features)), order="F")
        for i, c in enumerate(spec.features):
            values = vectors[c]
            if c in self._levels:
                X[:, i] = self._codes(c, values)
            elif isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf":
                X[:, i] = values.to_numpy()
            else:
                X[:, i] = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
        return X

    def _codes(self, feature: str, values: pd.Series) -> np.ndarray:
        """Category codes as the spec makes them (text, missing as "\0", unseen: NaN); text
        columns skip the conversion to pandas strings, which changes nothing for them."""
        levels = self._levels[feature]
        if values.dtype == object and "\0" not in levels and \
                pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
            codes = levels.get_indexer(values.to_numpy())
        else:
            codes = levels.get_indexer(values.astype("string").fillna("\0"))
        return np.where(codes >= 0, codes, np.nan)

    def reasons_for(self, vectors: pd.DataFrame) -> list[list[str]]:
        """The top three reasons of each row (as `score` gives them), alone."""
        return self._reasons(self.matrix(vectors), vectors) if len(vectors) else []

    def _reasons(self, X: np.ndarray, vectors: pd.DataFrame) -> list[list[str]]:
        contrib = self.bundle.classifier.predict(X, pred_contrib=True)
        return top_reasons(contrib, self.features, vectors)

    def score(self, vectors: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """Score feature vectors (one row per shipment; needs the model's features, and
        shipment_id when present is carried through). Times are UTC. Reasons (LightGBM's
        TreeSHAP) are by far the costliest part: about 1-2 ms a row on one core."""
        X = self.matrix(vectors)
        p = self.bundle.p_late(X)
        q = self.bundle.delay_quantiles(X)
        # hours_to_promised is relative to the moment the features describe
        asked = (pd.to_datetime(vectors["request_time_s"].to_numpy(), unit="s", utc=True)
                 if "request_time_s" in vectors else pd.Timestamp.now(tz="UTC"))
        # a what-if row may ask about a promise centuries away: keep times representable
        hours = np.clip(pd.to_numeric(vectors["hours_to_promised"], errors="coerce").to_numpy(
            dtype=float), -1e5, 1e5)
        promised = asked + _hours(hours)
        n = len(vectors)
        # the three delivery times' offsets from the promise (P50, P10, P90) in one conversion
        delays = _hours(np.clip(np.concatenate([q[0.5], q[0.1], q[0.9]]), -1e5, 1e5))
        columns = {
            "shipment_id": vectors["shipment_id"].to_numpy() if "shipment_id" in vectors else
            np.arange(n).astype(str),
            "p_late": p,
            "risk_band": self.band(p),
            "delay_p50_h": q[0.5],
            "delay_p90_h": q[0.9],
            "eta": promised + delays[:n],
            "eta_p10": promised + delays[n:2 * n],
            "eta_p90": promised + delays[2 * n:],
            "model_version": self.version,
        }
        if reasons:
            columns["reasons"] = self._reasons(X, vectors)
        return pd.DataFrame(columns, index=vectors.index)
