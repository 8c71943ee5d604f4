"""Model inputs from a training or scoring frame: the FeatureService's features, categoricals
with levels fixed at training time so that serving encodes them identically."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.notes import RECENT_NOTES
from features.schema import CATEGORICAL, FEATURE_SERVICE, NOTE_FEATURES, model_input_names
from training.note_model import NoteModel, cross_fit

# Risk can only rise with these, all else equal (enforced in the booster, checked in tests).
MONOTONE_UP = ["slip_h", "customs_holds", "customs_open", "note_risk", "exceptions"]


@dataclass
class FeatureSpec:
    """What a model was trained on: the FeatureService, its feature order and category levels."""

    service: str = FEATURE_SERVICE
    features: list[str] = field(default_factory=model_input_names)
    categories: dict[str, list[str]] = field(default_factory=dict)
    notes: NoteModel | None = None  # reads NOTE_FEATURES from recent_notes (saved by Bundle)

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> FeatureSpec:
        spec = cls()
        spec.categories = {c: sorted(frame[c].dropna().astype(str).unique().tolist())
                           for c in CATEGORICAL}
        if spec.reads_notes:
            spec.notes = NoteModel.fit_frame(frame)
        return spec

    @property
    def reads_notes(self) -> bool:
        return any(c in NOTE_FEATURES for c in self.features)

    @property
    def inputs(self) -> list[str]:
        """The FeatureService's features this model reads: its features, with recent_notes in
        place of the numbers the note model reads from it."""
        out = []
        for c in self.features:
            c = RECENT_NOTES if c in NOTE_FEATURES else c
            if c not in out:
                out.append(c)
        return out

    def note_features(self, frame, cross_fitted: bool = False) -> dict[str, np.ndarray]:
        """NOTE_FEATURES of a frame (or a mapping of columns) from its recent_notes: by the
        spec's note model, or out of fold (`cross_fitted`: the training rows the note model
        was fitted on; needs shipment_id and is_late)."""
        if cross_fitted:
            return cross_fit(frame)
        if self.notes is None:
            raise ValueError("this model reads notes but has no note model: train it again")
        return self.notes.features(frame[RECENT_NOTES])

    def matrix(self, frame: pd.DataFrame, cross_fitted: bool = False) -> pd.DataFrame:
        """The model matrix: numeric features as float, categoricals as codes of fixed levels
        (unseen or missing values become NaN, which LightGBM sends down its missing branch);
        note features from recent_notes (`note_features`)."""
        needed = self.inputs if self.reads_notes else self.features
        missing = [c for c in needed if c not in frame]
        if missing:
            raise KeyError(f"frame lacks model features: {', '.join(missing)}")
        notes = self.note_features(frame, cross_fitted) if self.reads_notes else {}
        out = {}
        for c in self.features:
            if c in notes:
                out[c] = np.asarray(notes[c], dtype=float)
            elif c in self.categories:
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
