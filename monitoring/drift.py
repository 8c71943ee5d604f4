"""Drift before the labels: the population stability index (PSI) of each model feature and of
P(late) against the model's training window.

The reference is a small JSON artifact per model version (`<data_dir>/monitoring/reference/
<version>.json`): for each numeric feature the edges of its deciles in the training window and
the share of rows in each bin (plus one bin for missing values), for each categorical feature
its levels' shares (plus "other" and missing), the same for P(late) on the training rows, and
the model's log loss on its validation window (what realized log loss is compared with). It is
built from the training set once (`build_reference`: at training time, or by `shipdelay monitor`
from the lake's current training window the first time it meets a version without one), then
only read: bins are fixed, so a day's counts are a few bincounts and never need the training
data again.

PSI = sum over bins of (a - e) * ln(a / e), shares floored at `FLOOR` so an empty bin costs a
bounded amount. Read it as: < 0.1 stable, 0.1-0.25 a shift worth a look, > 0.25 a real shift.

Some features drift by construction (`EXPECTED_DRIFT`): they are clocks, so any later window
differs from the training window whatever the world does. Their PSI is still computed and
reported; they never raise a drift alarm. A reference is judged only when it is wide enough
(`thin_reference`): a training window of a few days or rows would make every season a drift.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from serving.columns import as_array, as_numbers

FLOOR = 1e-4
DECILES = np.linspace(0.1, 0.9, 9)
MAX_LEVELS = 30  # categorical levels kept by name; the rest share one "other" bin
PREDICTION = "p_late"  # the prediction's drift is reported next to the features'
MIN_REFERENCE_ROWS = 1_000  # fewer training rows than this make every PSI noise


def _expected_drift() -> dict[str, str]:
    """Feature -> why its drift against the training window is expected, not news."""
    from features.schema import feature_groups

    out = {f: "calendar: any later window has other months, weekdays and hours"
           for f in feature_groups()["calendar"]}
    out["hours_to_promised"] = ("a clock: hours from the request to the promise follow when "
                                "requests are made, not the world")
    return out


EXPECTED_DRIFT = _expected_drift()


@dataclass
class Binning:
    """How one column is cut into bins: numeric edges, or categorical levels."""

    name: str
    edges: np.ndarray | None = None  # numeric: bins (-inf, e0], (e0, e1], ..., (ek, inf), missing
    levels: list[str] | None = None  # categorical: each level, other, missing
    shares: np.ndarray | None = None  # the reference's share of rows per bin

    @property
    def bins(self) -> int:
        return len(self.edges) + 2 if self.edges is not None else len(self.levels) + 2

    def codes(self, values) -> np.ndarray:
        """The bin of each value (vectorized)."""
        if self.edges is not None:
            x = as_numbers(values)
            out = np.searchsorted(self.edges, x, side="left")
            out[np.isnan(x)] = self.bins - 1
            return out
        text = pd.Series(as_array(values), dtype=object)
        codes = pd.Index(self.levels).get_indexer(text.where(text.notna(), None))
        return np.where(text.isna().to_numpy(), self.bins - 1,
                        np.where(codes >= 0, codes, self.bins - 2))

    def counts(self, values) -> np.ndarray:
        return np.bincount(self.codes(values), minlength=self.bins)

    def to_dict(self) -> dict:
        out = {"shares": self.shares.tolist()}
        if self.edges is not None:
            out["edges"] = self.edges.tolist()
        else:
            out["levels"] = self.levels
        return out

    @classmethod
    def from_dict(cls, name: str, data: dict) -> Binning:
        edges = np.asarray(data["edges"], float) if "edges" in data else None
        return cls(name, edges, data.get("levels"), np.asarray(data["shares"], float))


def fit_binning(name: str, values, categorical: bool) -> Binning:
    """Bins from the reference's values, with the reference's shares."""
    if categorical:
        text = pd.Series(as_array(values), dtype=object).dropna().astype(str)
        levels = text.value_counts().index[:MAX_LEVELS].tolist()
        b = Binning(name, levels=levels)
    else:
        x = as_numbers(values)
        x = x[np.isfinite(x)]
        edges = np.unique(np.quantile(x, DECILES)) if len(x) else np.array([], float)
        b = Binning(name, edges=edges)
    counts = b.counts(values)
    b.shares = counts / max(counts.sum(), 1)
    return b


def psi(expected: np.ndarray, actual_counts: np.ndarray) -> float:
    """PSI of observed counts against expected shares (NaN without observations)."""
    total = actual_counts.sum(axis=-1, keepdims=True)
    a = np.maximum(actual_counts / np.maximum(total, 1), FLOOR)
    e = np.maximum(np.asarray(expected, float), FLOOR)
    value = ((a - e) * np.log(a / e)).sum(axis=-1)
    return np.where(total[..., 0] > 0, value, np.nan) if np.ndim(value) else (
        float(value) if total[0] > 0 else float("nan"))


@dataclass
class Reference:
    """The training window's distributions for one model version."""

    version: str
    binnings: dict[str, Binning]
    log_loss: float  # the model's log loss on its validation window
    rows: int
    source: str
    window_days: float = float("nan")  # the training window's span (NaN: not recorded)

    def to_dict(self) -> dict:
        return {"version": self.version, "log_loss": self.log_loss, "rows": self.rows,
                "source": self.source,
                "window_days": self.window_days if np.isfinite(self.window_days) else None,
                "columns": {n: b.to_dict() for n, b in self.binnings.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Reference:
        return cls(str(data["version"]),
                   {n: Binning.from_dict(n, d) for n, d in data["columns"].items()},
                   float(data.get("log_loss", float("nan"))), int(data.get("rows", 0)),
                   str(data.get("source", "")),
                   float(data.get("window_days") if data.get("window_days") is not None
                         else float("nan")))


def thin_reference(ref: Reference, min_days: float, min_rows: int = MIN_REFERENCE_ROWS
                   ) -> str | None:
    """Why `ref` is too narrow to judge drift against (one sentence), or None when it is wide
    enough: fewer than `min_rows` rows, or a training window shorter than `min_days`."""
    short_window = np.isfinite(ref.window_days) and ref.window_days < min_days
    if ref.rows >= min_rows and not short_window:
        return None
    span = f"{ref.window_days:.0f} day(s)" if np.isfinite(ref.window_days) else "an unknown span"
    return (f"the drift reference of model version {ref.version} holds {ref.rows} training "
            f"row(s) over {span} (needs {min_rows} rows and {min_days:g} days), so drift is "
            "not judged: retrain on a longer history (`shipdelay retrain`)")


def build_reference(version: str, frame: pd.DataFrame, features: list[str],
                    categorical: set[str], p_late, log_loss: float, source: str,
                    window_days: float = float("nan")) -> Reference:
    """A reference from training rows (`frame` holds the features) and their P(late);
    `window_days` is the span of the training window they come from. Text features (the notes)
    have no bins: the numbers the model reads from them (`NOTE_FEATURES`) stand for them."""
    from features.schema import TEXT_FEATURES

    binnings = {f: fit_binning(f, frame[f], f in categorical) for f in features
                if f in frame and f not in TEXT_FEATURES}
    binnings[PREDICTION] = fit_binning(PREDICTION, p_late, False)
    return Reference(version, binnings, float(log_loss), len(frame), source,
                     float(window_days))


def reference_path(data_dir: Path, version: str) -> Path:
    return Path(data_dir) / "monitoring" / "reference" / f"{version}.json"


def save_reference(data_dir: Path, ref: Reference) -> Path:
    """Write the artifact atomically (temp file + rename)."""
    path = reference_path(data_dir, ref.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(ref.to_dict()))
    os.replace(tmp, path)
    return path


def load_reference(data_dir: Path, version: str) -> Reference | None:
    path = reference_path(data_dir, version)
    if not path.exists():
        return None
    return Reference.from_dict(json.loads(path.read_text()))


def reference_from_training(settings, version: str) -> Reference:
    """Build (and save) the reference of a registered version from the lake's current training
    window: its training rows' features and its P(late) on them, its log loss on validation.
    Models trained since the monitor exists saved theirs when registered."""
    from registry.loader import bundle_folder
    from registry.store import MODEL_NAME, client
    from training.bundle import Bundle
    from training.train import current_split

    c = client(settings)
    bundle = Bundle.load(bundle_folder(settings, c, c.get_model_version(MODEL_NAME, version)),
                         version=version)
    return save_training_reference(settings, version, bundle, current_split(settings))


def save_training_reference(settings, version: str, bundle, split) -> Reference:
    """Build and save a version's reference from the split it was trained on: the training
    rows' features (with the note features the trees were fitted on, out of fold, so that they
    compare with what a door reads from new notes) and P(late), the validation log loss (what
    `shipdelay train` calls)."""
    from features.schema import CATEGORICAL
    from training.evaluate import classification_metrics
    from training.train import score_frame

    train = split.train
    p_train, _ = score_frame(bundle, train)
    if bundle.spec.reads_notes:  # what the trees learned from: each row's out-of-fold notes
        train = train.assign(**bundle.spec.note_features(train, cross_fitted=True))
    p_valid, _ = score_frame(bundle, split.valid)
    loss = classification_metrics(split.valid["is_late"].to_numpy(float), p_valid)["log_loss"]
    booked = train["booked_at_s"] if "booked_at_s" in train else pd.Series(dtype=float)
    span = float((booked.max() - booked.min()) / 86400) if len(booked) else float("nan")
    ref = build_reference(version, train, bundle.spec.features, set(CATEGORICAL), p_train,
                          loss, f"training window up to {split.bounds['train_end']}", span)
    save_reference(settings.data_dir, ref)
    return ref
