"""What tracking notes say about lateness, learned from the training window: character n-grams
hashed into a fixed space and a logistic regression from a note's text to P(late).

No word lists: a note in any language, abbreviated or misspelt, shares n-grams with the notes
the model was trained on (`char_wb` 3-5-grams survive a swapped or dropped letter), so a
company's own notes carry signal once its training window holds enough of them. The hashing
needs no vocabulary, so the model is its coefficients and a few settings; it is saved next to
the boosters (JSON and a NumPy array, nothing pickled).

The trees read three numbers per shipment from its `recent_notes` (features.notes):
- `note_risk`: the greatest log-odds of lateness among its recent notes;
- `note_latest_risk`: the log-odds of its newest note (a resolved problem reads lower);
- `note_count`: how many recent notes it has (up to features.notes.MAX_NOTES).
Without notes the two scores are missing (NaN), never a guess.

Training examples are (shipment, distinct note text) pairs of the training window labelled with
the shipment's lateness, so a shipment counts once per note however many snapshots it has;
identical texts are pooled into weighted examples, so the fit costs the distinct texts.
Training rows get out-of-fold scores (`cross_fit`): each shipment's notes are scored by a model
fitted without that shipment, so the trees never learn to trust an in-sample score.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from features.notes import RECENT_NOTES, note_codes, note_texts, split_entries
from features.schema import NOTE_FEATURES

NGRAMS = (3, 5)
N_FEATURES = 2**18
C = 1.0  # inverse L2 strength of the logistic regression
FOLDS = 5
CACHE_TEXTS = 200_000  # note texts whose log-odds a model keeps (notes repeat a lot)
FILE = "note_model.json"
WEIGHTS = "note_model_coef.npz"


def _vectorizer(ngrams=NGRAMS, n_features=N_FEATURES) -> HashingVectorizer:
    return HashingVectorizer(analyzer="char_wb", ngram_range=tuple(ngrams), n_features=n_features,
                             alternate_sign=False, norm="l2", lowercase=True)


@dataclass
class NoteModel:
    """Log-odds of lateness of a note's text: hashed character n-grams times `coef`."""

    coef: np.ndarray  # dense, one weight per hashed feature
    intercept: float
    ngrams: tuple[int, int] = NGRAMS
    examples: int = 0  # (shipment, text) pairs it was fitted on
    oof_auc: float = float("nan")  # AUC of out-of-fold note_risk on the training rows
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, texts: np.ndarray, late: np.ndarray, weight: np.ndarray | None = None
            ) -> NoteModel:
        """Fit on note texts and 0/1 lateness (optionally weighted); no examples, or one class
        only, give a model whose every note scores the same."""
        texts = np.asarray(texts, dtype=object)
        late = np.asarray(late, dtype=float)
        weight = np.ones(len(texts)) if weight is None else np.asarray(weight, dtype=float)
        pooled = pd.DataFrame({"text": texts, "late": late, "w": weight}).groupby(
            ["text", "late"], sort=True)["w"].sum().reset_index()
        if pooled["late"].nunique() < 2:
            rate = float(np.average(late, weights=weight)) if len(texts) else 0.5
            rate = min(max(rate, 1e-3), 1 - 1e-3)
            return cls(np.zeros(N_FEATURES), float(np.log(rate / (1 - rate))),
                       examples=len(texts))
        X = _vectorizer().transform(pooled["text"].tolist()).tocsr()
        # fitted on the hashed features the texts use (the others stay 0 under L2): the same
        # solution, at the cost of the n-grams seen rather than of the whole hashed space
        used = np.unique(X.indices)
        lr = LogisticRegression(C=C, max_iter=1000)
        lr.fit(X[:, used], pooled["late"].to_numpy(), sample_weight=pooled["w"].to_numpy())
        coef = np.zeros(N_FEATURES)
        coef[used] = lr.coef_.ravel()
        return cls(coef, float(lr.intercept_[0]), examples=len(texts))

    @classmethod
    def fit_frame(cls, frame: pd.DataFrame, target: str = "is_late") -> NoteModel:
        """Fit on a training frame's snapshots (shipment_id, recent_notes, target), then
        measure its out-of-fold AUC there."""
        texts, late = examples(frame, target)
        model = cls.fit(texts, late)
        model.examples = len(texts)
        scores = cross_fit(frame, target)
        y = frame[target].to_numpy(float)
        seen = ~np.isnan(scores["note_risk"])
        if seen.any() and 0 < y[seen].mean() < 1:
            from sklearn.metrics import roc_auc_score

            model.oof_auc = float(roc_auc_score(y[seen], scores["note_risk"][seen]))
        return model

    def metrics(self) -> dict[str, float]:
        """What a training run logs of the note model."""
        out = {"note_model.examples": float(self.examples)}
        if not np.isnan(self.oof_auc):
            out["note_model.oof_auc"] = self.oof_auc
        return out

    # -- scoring ---------------------------------------------------------------------------
    def logits(self, texts: np.ndarray) -> np.ndarray:
        """Log-odds of lateness per note text, each distinct text computed once and kept."""
        texts = np.asarray(texts, dtype=object)
        if len(texts) == 0:
            return np.zeros(0)
        codes, uniques = pd.factorize(texts)
        return self._distinct_logits(np.asarray(uniques, dtype=object))[codes]

    def _distinct_logits(self, uniques: np.ndarray) -> np.ndarray:
        """`logits` of distinct texts: from the cache, the others computed and kept."""
        if len(uniques) == 0:
            return np.zeros(0)
        cache = self._cache
        values = np.fromiter((cache.get(t, np.nan) for t in uniques), float, len(uniques))
        new = np.flatnonzero(np.isnan(values))
        if len(new):
            fresh = uniques[new].tolist()
            X = _vectorizer(self.ngrams, len(self.coef)).transform(fresh)
            values[new] = X @ self.coef + self.intercept
            with self._lock:
                if len(cache) + len(fresh) > CACHE_TEXTS:
                    cache.clear()
                cache.update(zip(fresh, values[new].tolist()))
        return values

    def features(self, recent_notes) -> dict[str, np.ndarray]:
        """NOTE_FEATURES per row of `recent_notes` values (see the module doc), plus the text of
        the riskiest and of the newest note (`note_risk_text`, `note_latest_text`: what the
        reasons quote; "" without notes)."""
        n = len(recent_notes)
        rows, codes, distinct = note_codes(recent_notes)
        values = self._distinct_logits(distinct)[codes]
        count = np.bincount(rows, minlength=n).astype(float)
        risk = np.full(n, -np.inf)
        np.maximum.at(risk, rows, values)
        top_text = np.full(n, "", dtype=object)
        latest = np.full(n, np.nan)
        latest_text = np.full(n, "", dtype=object)
        if len(rows):
            # entries come row by row, newest first: each row's first is its newest
            first = np.r_[True, rows[1:] != rows[:-1]]
            latest[rows[first]] = values[first]
            latest_text[rows[first]] = distinct[codes[first]]
            best = np.lexsort((-values, rows))
            top = best[np.r_[True, rows[best][1:] != rows[best][:-1]]]
            top_text[rows[top]] = distinct[codes[top]]
        risk[np.isinf(risk)] = np.nan
        return {"note_risk": risk, "note_latest_risk": latest, "note_count": count,
                "note_risk_text": top_text, "note_latest_text": latest_text}

    # -- files -----------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        nonzero = np.flatnonzero(self.coef)
        np.savez(Path(folder) / WEIGHTS, index=nonzero.astype(np.int64),
                 value=self.coef[nonzero])
        (Path(folder) / FILE).write_text(json.dumps({
            "analyzer": "char_wb", "ngrams": list(self.ngrams), "n_features": len(self.coef),
            "intercept": self.intercept, "examples": self.examples,
            "oof_auc": None if np.isnan(self.oof_auc) else self.oof_auc}))

    @classmethod
    def load(cls, folder: Path) -> NoteModel | None:
        """The note model saved in `folder`, or None when the bundle has none."""
        path = Path(folder) / FILE
        if not path.exists():
            return None
        meta = json.loads(path.read_text())
        with np.load(Path(folder) / WEIGHTS, allow_pickle=False) as w:
            coef = np.zeros(int(meta["n_features"]))
            coef[w["index"]] = w["value"]
        auc = meta.get("oof_auc")
        return cls(coef, float(meta["intercept"]), tuple(meta["ngrams"]),
                   int(meta.get("examples", 0)), float("nan") if auc is None else float(auc))


def examples(frame: pd.DataFrame, target: str = "is_late") -> tuple[np.ndarray, np.ndarray]:
    """(text, label) per distinct (shipment, note text) of the frame's snapshots."""
    rows, entries = split_entries(frame[RECENT_NOTES])
    pairs = pd.DataFrame({"sid": _shipments(frame).to_numpy(dtype=object)[rows],
                          "text": note_texts(entries),
                          "late": frame[target].to_numpy(float)[rows]})
    pairs = pairs.drop_duplicates(["sid", "text"])
    return pairs["text"].to_numpy(dtype=object), pairs["late"].to_numpy(float)


def _shipments(frame: pd.DataFrame) -> pd.Series:
    """Each row's shipment (without shipment_id, every row its own)."""
    if "shipment_id" in frame:
        return frame["shipment_id"]
    return pd.Series(np.arange(len(frame)).astype(str), index=frame.index)


def folds(shipment_ids: pd.Series, k: int = FOLDS) -> np.ndarray:
    """A fold number per row, by shipment (all snapshots of a shipment in one fold), stable
    across runs and row orders."""
    hashed = pd.util.hash_pandas_object(pd.Series(shipment_ids, dtype=object).astype(str),
                                        index=False).to_numpy()
    return (hashed % np.uint64(k)).astype(np.int64)


def cross_fit(frame: pd.DataFrame, target: str = "is_late", k: int = FOLDS
              ) -> dict[str, np.ndarray]:
    """Out-of-fold NOTE_FEATURES of the frame's rows: each fold scored by a note model fitted
    on the other folds' shipments."""
    fold = folds(_shipments(frame), k)
    out = {c: np.full(len(frame), np.nan) for c in NOTE_FEATURES}
    for f in range(k):
        held = fold == f
        if not held.any():
            continue
        model = NoteModel.fit(*examples(frame[~held], target))
        scored = model.features(frame[RECENT_NOTES].to_numpy(dtype=object)[held])
        for c in NOTE_FEATURES:
            out[c][held] = scored[c]
    return out
