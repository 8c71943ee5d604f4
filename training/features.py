"""Model inputs from a training or scoring frame: the FeatureService's features, categoricals
with levels fixed at training time so that serving encodes them identically."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.schema import CATEGORICAL, FEATURE_SERVICE, model_feature_names

# Risk can only rise with these, all else equal (enforced in the booster, checked in tests).
MONOTONE_UP = ["slip_h", "customs_holds", "customs_open", "note_customs", "exceptions"]


@dataclass
class FeatureSpec:
    """What a model was trained on: the FeatureService, its feature order and category levels."""

    service: str = FEATURE_SERVICE
    features: list[str] = field(default_factory=model_feature_names)
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> FeatureSpec:
        spec = cls()
        spec.categories = {c: sorted(frame[c].dropna().astype(str).unique().tolist())
                           for c in CATEGORICAL}
        return spec

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model matrix: numeric features as float, categoricals as codes of fixed levels
        (unseen or missing values become NaN, which LightGBM sends down its missing branch)."""
        missing = [c for c in self.features if c not in frame]
        if missing:
            raise KeyError(f"frame lacks model features: {', '.join(missing)}")
        out = {}
        for c in self.features:
            if c in self.categories:
                levels = pd.Index(self.categories[c])
                codes = levels.get_indexer(frame[c].astype("string").fillna("\0"))
                out[c] = np.where(codes >= 0, codes, np.nan).astype(float)
            else:
                out[c] = pd.to_numeric(frame[c], errors="coerce").astype(float).to_numpy()
        return pd.DataFrame(out, index=frame.index)

    @property
    def categorical(self) -> list[str]:
        return [c for c in self.features if c in self.categories]

    def monotone(self) -> list[int]:
        return [1 if c in MONOTONE_UP else 0 for c in self.features]

    def to_dict(self) -> dict:
        return {"service": self.service, "features": self.features, "categories": self.categories}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(d["service"], list(d["features"]), {k: list(v) for k, v in d["categories"].items()})
