"""The one scorer: feature vectors in, everything operations want to know out.

Probability of being late (calibrated), a risk band, P50 and P90 delay hours, the predicted
delivery time with its P10-P90 interval, three reasons in plain words and the model version.
Delay hours and delivery times are those of a shipment not delivered at the instant its
features describe (`serving.eta.conditional_delays`): the model's P10/P50/P90 of the delay
define a monotone piecewise-linear CDF (the lowest 10% at P10, an exponential tail above P90),
conditioned on delivery after that instant; so no forecast is earlier than "now", quantiles
that are all after it are unchanged, and P10 <= P50 <= P90.
The online service, the stream scorer and the nightly batch all call `Scorer.score`.

Vectors carry the FeatureService's features (`inputs`); the bundle's note model turns their
recent_notes into the note features the trees read (`with_notes`), here and nowhere else, so
every door reads notes alike. It keeps each distinct note text's score, so a stream of
micro-batches scores the notes it has not met yet only.
"""

from __future__ import annotations

import itertools
import math
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.notes import RECENT_NOTES
from features.request_time import REQUEST_TIME
from features.schema import ON_DEMAND
from serving import explain as explaining
from serving.columns import as_array, as_numbers
from serving.eta import conditional_delays
from serving.reasons import QUOTES, strongest, words_of
from serving.reasons_memory import ReasonsMemory
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
        self._code_of = {c: {v: float(i) for i, v in enumerate(levels)}
                         for c, levels in spec.categories.items()}
        # the inputs that describe a shipment's state (not the clock): reasons' memory key
        self._lasting = np.array([i for i, f in enumerate(spec.features) if f not in ON_DEMAND],
                                 dtype=int)
        # what reasons read: the features and the note each note feature quotes
        self._quotes = [QUOTES[f] for f in spec.features if f in QUOTES]
        self._explained = [*spec.features, *self._quotes]

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def features(self) -> list[str]:
        """The model's inputs, in matrix order (note features included)."""
        return self.bundle.spec.features

    @property
    def inputs(self) -> list[str]:
        """The FeatureService's features a vector must carry (recent_notes, not note scores)."""
        return self.bundle.spec.inputs

    def with_notes(self, vectors: Mapping) -> Mapping:
        """`vectors` with the note features (and the notes reasons quote) read from their
        recent_notes by the bundle's note model; as they are when the model reads no notes or
        they lack recent_notes (`matrix` then names it)."""
        spec = self.bundle.spec
        if not spec.reads_notes or RECENT_NOTES not in vectors:
            return vectors
        if isinstance(vectors, dict):  # the service's columns: a plain dict reads faster
            return {**vectors, **spec.note_features(vectors)}
        return ChainMap(spec.note_features(vectors), vectors)

    def band(self, p: np.ndarray) -> np.ndarray:
        return np.where(p >= self.thresholds.high, "high",
                        np.where(p >= self.thresholds.medium, "medium", "low"))

    def matrix(self, vectors: Mapping) -> np.ndarray:
        """`spec.matrix(vectors)`: the model matrix of vectors carrying `inputs`."""
        return self._matrix(self.with_notes(vectors))

    def _matrix(self, vectors: Mapping) -> np.ndarray:
        """`spec.matrix(vectors)` as one float64 array, the same values built in bulk: numeric
        columns of numpy dtypes copied as they are, the others converted exactly as the spec
        does; categoricals as codes of the training levels (NaN when unseen or missing).
        Column-major, so that each column is one contiguous copy (LightGBM predicts from either
        layout without a copy and at the same speed). `vectors` is a frame or a mapping of
        column name to array (the online service's frame-free path)."""
        spec = self.bundle.spec
        missing = [c for c in spec.features if c not in vectors]
        if missing:
            return spec.matrix(pd.DataFrame(dict(vectors))).to_numpy(dtype=float)  # names them
        X = np.empty((_rows(vectors), len(spec.features)), order="F")
        for i, c in enumerate(spec.features):
            X[:, i] = self._codes(c, vectors[c]) if c in self._levels else as_numbers(vectors[c])
        return X

    def _codes(self, feature: str, values) -> np.ndarray:
        """Category codes as the spec makes them (text, missing as "\0", unseen: NaN); text
        columns skip the conversion to pandas strings, which changes nothing for them."""
        levels = self._levels[feature]
        array = as_array(values)
        if len(array) <= SMALL:
            return self._few_codes(feature, array)
        if array.dtype == object and "\0" not in levels and \
                pd.api.types.infer_dtype(array, skipna=True) in ("string", "empty"):
            codes = levels.get_indexer(array)
        else:
            codes = levels.get_indexer(pd.Series(array).astype("string").fillna("\0"))
        return np.where(codes >= 0, codes, np.nan)

    def _few_codes(self, feature: str, array: np.ndarray) -> np.ndarray:
        """`_codes` of a few values by dictionary lookups (an index lookup's fixed cost is most
        of a one-shipment request's matrix): text as it is, missing as "\0", other values as
        their text, as `astype("string")` makes them."""
        code_of = self._code_of[feature]
        missing = code_of.get("\0", np.nan)
        values = array.tolist()
        kinds = set(map(type, values))
        if kinds <= {str} or (kinds <= {str, type(None)} and np.isnan(missing)):
            # text and None only (the online reader's columns): one lookup each, in C
            return np.fromiter(map(code_of.get, values, itertools.repeat(np.nan)), float,
                               len(values))
        return np.array([code_of.get(v, np.nan) if isinstance(v, str) else
                         missing if v is None or v is pd.NA or _nan(v) else
                         code_of.get(str(v), np.nan) for v in values], dtype=float)

    def reasons_for(self, vectors: Mapping) -> list[list[str]]:
        """The top three reasons of each row (as `score` gives them), alone."""
        if not _rows(vectors):
            return []
        vectors = self.with_notes(vectors)
        return self._reasons(self._matrix(vectors), vectors)[1]

    def explain(self, vectors: Mapping, rows: np.ndarray | None = None) -> list:
        """The reasons of `rows` (all when None) with what they explain, as the online store
        keeps them (`serving.explain.explain`)."""
        return explaining.explain(self, vectors, rows)

    def _reasons(self, X: np.ndarray, vectors: Mapping
                 ) -> tuple[list[list[tuple[str, float]]], list[list[str]]]:
        """TreeSHAP of the rows of X: the strongest risk-raising (feature, contribution) pairs
        of each row and their sentences."""
        contrib = self.bundle.classifier.predict(X, pred_contrib=True)
        top = strongest(contrib, len(self.features))
        names = self.features
        return [[(names[j], c) for j, c in pairs] for pairs in top], \
            words_of(top, names, vectors)

    def score(self, vectors: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """Score feature vectors (one row per shipment; needs the model's features, and
        shipment_id when present is carried through). Times are UTC. Reasons (LightGBM's
        TreeSHAP) are by far the costliest part: about 1-2 ms a row on one core."""
        columns = self.score_columns(vectors, reasons_from=0.0 if reasons else None)
        for c in (*ETA_COLUMNS, "reasons_at") if reasons else ETA_COLUMNS:
            columns[c] = pd.DatetimeIndex(columns[c]).tz_localize("UTC")
        return pd.DataFrame(columns, index=vectors.index)

    def score_columns(self, vectors: Mapping, reasons_from: float | None = 0.0,
                      memory: ReasonsMemory | None = None, stored: explaining.Lookup | None = None,
                      max_age_s: float = explaining.MAX_AGE_S) -> dict:
        """`score` without frames: a mapping of column -> array in, a dict of arrays out (ETAs
        as UTC datetime64[ns]). Reasons go to the rows with P(late) >= `reasons_from` ([] for
        the others), with `reasons_at`, the instant they explain (NaT: none); None: no reasons
        columns. `stored` (shipment ids -> kept records) gives reasons kept in the online
        store, served while valid (`serving.explain`); with a `memory`, reasons of a shipment
        whose state it has seen are recalled; the others are computed (both need
        shipment_id). A request's cost for a few rows is mostly frames, so the online service
        calls this directly."""
        n = _rows(vectors)
        vectors = self.with_notes(vectors)
        # rows contiguous once for the four boosters (compiled trees read rows; a million
        # rows' matrix copied per booster was half a second each)
        X = np.ascontiguousarray(self._matrix(vectors))
        p = self.bundle.p_late(X)
        q = self.bundle.delay_quantiles(X)
        # hours_to_promised is relative to the moment the features describe
        asked = _instants(np.asarray(vectors["request_time_s"], dtype=float)
                          if "request_time_s" in vectors
                          else np.full(n, pd.Timestamp.now(tz="UTC").timestamp()))
        # a what-if row may ask about a promise centuries away: keep times representable
        hours = np.clip(as_numbers(vectors["hours_to_promised"]), -1e5, 1e5)
        promised = asked + _hours(hours)
        # delivery comes after the instant the features describe (`serving.eta`): "now" is
        # -hours_to_promised hours after the promise
        d10, d50, d90 = conditional_delays(q[0.1], q[0.5], q[0.9], -hours)
        # the three delivery times' offsets from the promise (P50, P10, P90) in one conversion
        delays = _hours(np.clip(np.concatenate([d50, d10, d90]), -1e5, 1e5))
        columns = {
            "shipment_id": np.asarray(vectors["shipment_id"], dtype=object)
            if "shipment_id" in vectors else np.arange(n).astype(str),
            "p_late": p,
            "risk_band": self.band(p),
            "delay_p50_h": d50,
            "delay_p90_h": d90,
            "eta": promised + delays[:n],
            "eta_p10": promised + delays[n:2 * n],
            "eta_p90": promised + delays[2 * n:],
            "promised_at": promised,
            "model_version": np.full(n, self.version, dtype=object),
        }
        if reasons_from is not None:
            if REQUEST_TIME not in vectors:  # the instant the reasons explain
                vectors = ChainMap({REQUEST_TIME: asked.astype("int64") / 1e9}, vectors)
            words, at = explaining.serve(self, X, vectors, np.flatnonzero(p >= reasons_from), n,
                                      memory, stored, max_age_s)
            columns["reasons"] = words
            columns["reasons_at"] = np.where(np.isnan(at), np.datetime64("NaT"),
                                             _instants(np.nan_to_num(at)))
        return columns


ETA_COLUMNS = ("eta", "eta_p10", "eta_p90", "promised_at")
SMALL = 512  # up to this many rows, category codes come from dictionary lookups (a pandas
# index lookup costs ~40 us a call: 100 rows of seven categories 0.10 vs 0.28 ms; even at 500)


def _instants(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as datetime64[ns], exactly as `pd.to_datetime(unit="s")` makes them (whole
    seconds and the fraction rounded to 9 digits apart; seconds * 1e9 in one float drifts by
    ~100 ns), without building an index."""
    whole = seconds.astype("int64")
    fraction = np.round(seconds - whole, 9)
    return (whole * 1_000_000_000 + (fraction * 1e9).astype("int64")).astype("M8[ns]")


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _rows(vectors: Mapping) -> int:
    return len(vectors) if isinstance(vectors, pd.DataFrame) else len(next(iter(vectors.values())))
