"""A trained model as files: native LightGBM boosters, the calibrator, the feature spec and
the note model.

Nothing is pickled: boosters are LightGBM's text format, the isotonic calibrator is its
breakpoints in JSON, the spec is JSON, the note model JSON and a NumPy array. The registry stores this folder with each model version
and every scoring path loads it with `Bundle.load`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.features import FeatureSpec
from training.note_model import NoteModel
from training.params import QUANTILES


@dataclass
class Calibrator:
    """Isotonic map from raw booster score to probability (piecewise linear between breakpoints)."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.clip(np.interp(raw, self.x, self.y), 1e-4, 1 - 1e-4)

    @classmethod
    def fit(cls, raw: np.ndarray, label: np.ndarray,
            weight: np.ndarray | None = None) -> Calibrator:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
            raw, label, sample_weight=weight)
        return cls(np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float))


@dataclass
class Bundle:
    classifier: lgb.Booster
    quantiles: dict[float, lgb.Booster]
    calibrator: Calibrator
    spec: FeatureSpec
    version: str = "unregistered"
    interval_adjust_h: float = 0.0  # conformal widening of P10..P90, fitted on validation

    def p_late(self, X: pd.DataFrame) -> np.ndarray:
        return self.calibrator(self.classifier.predict(X, raw_score=False))

    def delay_quantiles(self, X: pd.DataFrame) -> dict[float, np.ndarray]:
        """P10/P50/P90 of delay hours, sorted so they never cross."""
        raw = np.column_stack([self.quantiles[q].predict(X) for q in QUANTILES])
        raw.sort(axis=1)
        raw[:, 0] -= self.interval_adjust_h
        raw[:, -1] += self.interval_adjust_h
        return {q: raw[:, i] for i, q in enumerate(QUANTILES)}

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.classifier.save_model(str(folder / "classifier.txt"))
        for q, booster in self.quantiles.items():
            booster.save_model(str(folder / f"delay_q{int(q * 100):02d}.txt"))
        (folder / "calibrator.json").write_text(json.dumps(
            {"x": self.calibrator.x.tolist(), "y": self.calibrator.y.tolist(),
             "interval_adjust_h": self.interval_adjust_h}))
        (folder / "spec.json").write_text(json.dumps(self.spec.to_dict(), indent=1))
        if self.spec.notes is not None:
            self.spec.notes.save(folder)
        return folder

    @classmethod
    def load(cls, folder: Path, version: str = "unregistered") -> Bundle:
        folder = Path(folder)
        cal = json.loads((folder / "calibrator.json").read_text())
        spec = FeatureSpec.from_dict(json.loads((folder / "spec.json").read_text()))
        spec.notes = NoteModel.load(folder)
        return cls(
            classifier=lgb.Booster(model_file=str(folder / "classifier.txt")),
            quantiles={q: lgb.Booster(model_file=str(folder / f"delay_q{int(q * 100):02d}.txt"))
                       for q in QUANTILES},
            calibrator=Calibrator(np.asarray(cal["x"]), np.asarray(cal["y"])),
            spec=spec,
            version=version,
            interval_adjust_h=float(cal.get("interval_adjust_h", 0.0)),
        )
