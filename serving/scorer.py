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


class Scorer:
    def __init__(self, bundle: Bundle, thresholds: Thresholds = Thresholds()):
        self.bundle = bundle
        self.thresholds = thresholds

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def features(self) -> list[str]:
        return self.bundle.spec.features

    def band(self, p: np.ndarray) -> np.ndarray:
        return np.where(p >= self.thresholds.high, "high",
                        np.where(p >= self.thresholds.medium, "medium", "low"))

    def score(self, vectors: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """Score feature vectors (one row per shipment; needs the model's features, and
        shipment_id when present is carried through). Times are UTC."""
        X = self.bundle.spec.matrix(vectors)
        p = self.bundle.p_late(X)
        q = self.bundle.delay_quantiles(X)
        # hours_to_promised is relative to the moment the features describe
        asked = (pd.to_datetime(vectors["request_time_s"].to_numpy(), unit="s", utc=True)
                 if "request_time_s" in vectors else pd.Timestamp.now(tz="UTC"))
        # a what-if row may ask about a promise centuries away: keep times representable
        hours = np.clip(pd.to_numeric(vectors["hours_to_promised"], errors="coerce").to_numpy(
            dtype=float), -1e5, 1e5)
        promised = asked + pd.to_timedelta(hours, unit="h")
        out = pd.DataFrame({
            "shipment_id": vectors["shipment_id"].to_numpy() if "shipment_id" in vectors else
            np.arange(len(vectors)).astype(str),
            "p_late": p,
            "risk_band": self.band(p),
            "delay_p50_h": q[0.5],
            "delay_p90_h": q[0.9],
            "eta": promised + pd.to_timedelta(np.clip(q[0.5], -1e5, 1e5), unit="h"),
            "eta_p10": promised + pd.to_timedelta(np.clip(q[0.1], -1e5, 1e5), unit="h"),
            "eta_p90": promised + pd.to_timedelta(np.clip(q[0.9], -1e5, 1e5), unit="h"),
            "model_version": self.version,
        }, index=vectors.index)
        if reasons:
            contrib = self.bundle.classifier.predict(X, pred_contrib=True)
            out["reasons"] = top_reasons(contrib, self.features, vectors)
        return out
