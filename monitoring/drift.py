"""Drift before the labels: the population stability index (PSI) of each model feature and of
P(late) against the model's training window.

The reference is a small JSON artifact per model version (`<data_dir>/monitoring/reference/
<version>.json`): for each numeric feature the edges of its deciles and the share of rows in
each bin (plus one bin for missing values), for each categorical feature its levels' shares
(plus "other" and missing), the same for P(late), the same shares within each carrier, lane and
mode (`DRIFT_SLICES`) that has enough shipments, and the model's log loss on its validation
window (what realized log loss is compared with).

Its rows are what the nightly batch would have scored on the last nights before the model was
trained (`reference_rows`): the shipments in flight at `REFERENCE_AT` on every
`REFERENCE_EVERY_DAYS`-th of the last `REFERENCE_DAYS` days of the lake, with their
point-in-time features, the same join the batch reads. Training snapshots are another
population (taken at scans, weighted, ocean journeys capped), so comparing the nightly batch
with them would call every night a drift. A lake with no shipment in flight on those nights
falls back to the training rows. It is built once (at training time, or by `shipdelay monitor`
the first time it meets a version without one), then only read: bins are fixed, so a day's
counts are a few bincounts and never need the data again.

A slice (one carrier, lane or mode) is compared with the same slice of the reference, never
with the whole network (a carrier's shipments are not the average shipment), and not on the
statistics of its own entity (`OWN_STATISTICS`: one value a day for every shipment of the
slice, so a few days hold a handful of values, which no histogram can judge).

PSI alone grows with noise as samples shrink: with k bins and n independent observations on
each side, PSI * n_eff follows about a chi-square law with k - 1 degrees of freedom when nothing
changed (n_eff = 1 / (1/n_recent + 1/n_reference)). `noise_level` is the PSI that chance alone
exceeds one time in a thousand (infinite where the law does not hold: fewer than `MIN_PER_BIN`
observations per degree of freedom on either side, or a bin of the reference in which the
smaller sample expects fewer than that: chance then empties the bin often, and PSI's floor
makes that look like a shift; 87 shipments drawn from a slice's own shares exceeded the law's
one in a thousand 18 times as often); `shifted` tests the mean bin the same way (a z-test, far
stronger on a few shipments when a whole distribution moves one way). A monitoring run makes
one test per feature and slice, hundreds a night, in two families (P(late)'s, which alarm, and
the inputs', which explain an alarm: `monitoring.alarms.drift_alarms`), so each is held to one
in a thousand divided by its family's size (Bonferroni): a stable world stays quiet night after
night. A drift counts when PSI is above `monitor_psi` and one of the two says it is no chance. Observations are distinct shipments, not predictions
(the nightly batch scores a shipment every night); for the statistics of a carrier, lane or
customer (`STATISTIC_KEYS`) they are the distinct entities, which every shipment of the entity
shares (hubs are not logged: the distinct lanes, whose shipments pass the same hubs, bound
them)."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from serving.columns import as_array, as_numbers

FLOOR = 1e-4
DRIFT_SLICES = {"carrier": "carrier_id", "lane": "lane_id", "mode": "main_mode"}
REFERENCE_AT = pd.Timedelta(hours=2)  # the nightly batch's usual cut-off after midnight
REFERENCE_DAYS, REFERENCE_EVERY_DAYS = 28, 2
MIN_SLICE_SHIPMENTS = 10  # a slice of the reference with fewer shipments is not kept
SAMPLE_KEYS = ("shipment_id", "carrier_id", "lane_id", "customer_id")
NOISE_QUANTILE = 0.999
MIN_PER_BIN = 5  # observations per degree of freedom the chi-square law needs
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
    """The reference distributions for one model version (see the module doc)."""

    version: str
    binnings: dict[str, Binning]
    log_loss: float  # the model's log loss on its validation window
    rows: int
    source: str
    window_days: float = float("nan")  # the reference window's span (NaN: not recorded)
    shipments: int = 0  # distinct shipments among the rows (0: not recorded)
    samples: dict[str, int] = field(default_factory=dict)  # distinct values of SAMPLE_KEYS
    # "carrier=OCE-02" -> {"shipments": n, "shares": {column: shares}}, on the same bins
    slices: dict[str, dict] = field(default_factory=dict)

    def slice_shares(self, slice_: str, column: str) -> tuple[np.ndarray | None, int]:
        """The slice's shares of `column` and its independent observations of it (None, 0:
        no such slice)."""
        part = self.slices.get(slice_)
        if part is None or column not in part["shares"]:
            return None, 0
        counted = part.get("samples") or {"shipment_id": int(part["shipments"])}
        return np.asarray(part["shares"][column], float), observations(column, counted)

    def observations(self, column: str) -> int:
        """The whole reference's independent observations of `column`."""
        return observations(column, self.samples or {"shipment_id": self.shipments or self.rows})

    def to_dict(self) -> dict:
        return {"version": self.version, "log_loss": self.log_loss, "rows": self.rows,
                "source": self.source,
                "window_days": self.window_days if np.isfinite(self.window_days) else None,
                "shipments": self.shipments, "samples": self.samples, "slices": self.slices,
                "columns": {n: b.to_dict() for n, b in self.binnings.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Reference:
        return cls(str(data["version"]),
                   {n: Binning.from_dict(n, d) for n, d in data["columns"].items()},
                   float(data.get("log_loss", float("nan"))), int(data.get("rows", 0)),
                   str(data.get("source", "")),
                   float(data.get("window_days") if data.get("window_days") is not None
                         else float("nan")),
                   int(data.get("shipments", 0)), dict(data.get("samples", {})),
                   dict(data.get("slices", {})))


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


def own_statistics() -> dict[str, set[str]]:
    """Slice -> the statistics of its own entity, which it is not judged on."""
    from features.schema import feature_groups

    groups = feature_groups()
    return {"carrier": set(groups["carrier"]), "lane": set(groups["lane"]), "mode": set()}


def statistic_keys() -> dict[str, str]:
    """Statistic feature -> the column whose distinct values are its independent observations."""
    from features.schema import feature_groups

    groups = feature_groups()
    return {f: key for group, key in (("carrier", "carrier_id"), ("lane", "lane_id"),
                                      ("customer", "customer_id"), ("hub", "lane_id"))
            for f in groups[group]}


OWN_STATISTICS = own_statistics()
STATISTIC_KEYS = statistic_keys()


def samples(frame: pd.DataFrame) -> dict[str, int]:
    """Distinct values of each of `SAMPLE_KEYS` among `frame`'s rows (rows where absent)."""
    return {k: int(pd.Series(as_array(frame[k]), dtype=object).nunique()) if k in frame
            else len(frame) for k in SAMPLE_KEYS}


def observations(feature: str, counted: dict[str, int]) -> int:
    """How many independent observations a sample holds of `feature` (`samples`' counts)."""
    shipments = counted.get("shipment_id", 0)
    key = STATISTIC_KEYS.get(feature)
    return min(shipments, counted.get(key, shipments)) if key else shipments


def noise_level(shares, n_recent: int, n_reference: int, tests: int = 1) -> float:
    """The PSI that chance alone exceeds one time in a thousand among `tests` such tests
    (Bonferroni) between two samples of `n_recent` and `n_reference` independent observations
    over bins of the reference's `shares` (inf: where the chi-square law does not hold)."""
    from scipy.stats import chi2

    shares = np.asarray(shares, float)
    bins = len(shares)
    if min(n_recent, n_reference) < MIN_PER_BIN * max(bins - 1, 1):
        return float("inf")  # too few for the chi-square law: only `shifted` can judge
    # every bin the reference holds expects MIN_PER_BIN observations in the smaller sample;
    # below, chance empties a bin often, and PSI's floor makes that look like a shift
    expected = shares[shares > FLOOR] * min(n_recent, n_reference)
    if len(expected) and expected.min() < MIN_PER_BIN:
        return float("inf")
    n_eff = 1.0 / (1.0 / n_recent + 1.0 / n_reference)
    chance = (1.0 - NOISE_QUANTILE) / max(tests, 1)
    return float(chi2.isf(chance, max(bins - 1, 1)) / n_eff)


def shifted(expected: np.ndarray, counts: np.ndarray, n_recent: int, n_reference: int,
            numeric: bool, tests: int = 1) -> bool:
    """Whether the mean bin (numeric columns; the missing bin left out) moved further than
    chance allows one time in a thousand among `tests` such tests between the two samples."""
    from scipy.stats import norm

    if not numeric or n_recent <= 0 or n_reference <= 0:
        return False
    e, c = np.asarray(expected, float)[:-1], np.asarray(counts, float)[:-1]
    if e.sum() <= 0 or c.sum() <= 0:
        return False
    bins = np.arange(len(e), dtype=float)
    e = e / e.sum()
    mean_e = float((bins * e).sum())
    var_e = float(((bins - mean_e) ** 2 * e).sum())
    if var_e <= 0:
        return False
    mean_r = float((bins * c).sum() / c.sum())
    z = (mean_r - mean_e) / np.sqrt(var_e * (1.0 / n_recent + 1.0 / n_reference))
    return bool(abs(z) > norm.isf((1.0 - NOISE_QUANTILE) / 2 / max(tests, 1)))


def _slice_shares(frame: pd.DataFrame, binnings: dict[str, Binning], p_late) -> dict[str, dict]:
    """The reference's shares within each carrier, lane and mode with enough shipments."""
    out: dict[str, dict] = {}
    codes = {n: b.codes(p_late if n == PREDICTION else frame[n])
             for n, b in binnings.items() if n == PREDICTION or n in frame}
    for name, column in DRIFT_SLICES.items():
        if column not in frame:
            continue
        groups = pd.Series(as_array(frame[column]), dtype=object)
        for group, index in groups.groupby(groups, sort=True).indices.items():
            counted = samples(frame.iloc[index])
            shipments = counted["shipment_id"]
            if shipments < MIN_SLICE_SHIPMENTS:
                continue
            shares = {}
            for n, c in codes.items():
                if n == column or n in OWN_STATISTICS[name]:
                    continue
                counts = np.bincount(c[index], minlength=binnings[n].bins)
                shares[n] = np.round(counts / max(counts.sum(), 1), 6).tolist()
            out[f"{name}={group}"] = {"shipments": shipments, "samples": counted,
                                      "shares": shares}
    return out


def build_reference(version: str, frame: pd.DataFrame, features: list[str],
                    categorical: set[str], p_late, log_loss: float, source: str,
                    window_days: float = float("nan")) -> Reference:
    """A reference from rows (`frame` holds the features, and shipment_id and the slices'
    columns where known) and their P(late); `window_days` is the span of the window they come
    from. Text features (the notes) have no bins: the numbers the model reads from them
    (`NOTE_FEATURES`) stand for them."""
    from features.schema import TEXT_FEATURES

    binnings = {f: fit_binning(f, frame[f], f in categorical) for f in features
                if f in frame and f not in TEXT_FEATURES}
    binnings[PREDICTION] = fit_binning(PREDICTION, p_late, False)
    counted = samples(frame)
    return Reference(version, binnings, float(log_loss), len(frame), source,
                     float(window_days), counted["shipment_id"], counted,
                     _slice_shares(frame, binnings, np.asarray(p_late, float)))


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


def reference_nights(lake_now: pd.Timestamp) -> list[pd.Timestamp]:
    """The nightly cut-offs the reference is drawn at: every `REFERENCE_EVERY_DAYS`-th night of
    the `REFERENCE_DAYS` days before the lake's now, newest last."""
    last = lake_now.normalize() + REFERENCE_AT
    if last > lake_now:
        last -= pd.Timedelta(days=1)
    return [last - pd.Timedelta(days=d)
            for d in range(REFERENCE_DAYS - 1, -1, -1) if d % REFERENCE_EVERY_DAYS == 0]


def reference_rows(settings) -> tuple[pd.DataFrame, list[pd.Timestamp]]:
    """The point-in-time feature vectors of the shipments in flight at each reference night
    (`reference_nights`), as the nightly batch reads them; empty when none was in flight."""
    from features.store import offline_dir
    from serving.batch import in_flight_at, lake_now
    from shipdelay.lake import Lake
    from training.dataset import point_in_time

    lake = Lake(settings.lake_dir)
    nights = reference_nights(lake_now(lake))
    snapshots = in_flight_at(lake, nights)
    if snapshots.empty:
        return snapshots, nights
    vectors = point_in_time(offline_dir(settings), snapshots)
    vectors = vectors[vectors["booked_at_s"].notna().to_numpy()].reset_index(drop=True)
    return vectors, nights


def save_training_reference(settings, version: str, bundle, split) -> Reference:
    """Build and save a version's reference: the nightly rows of the lake it was trained on
    (`reference_rows`), or, when no shipment was in flight then, its training rows (with the
    note features the trees were fitted on, out of fold, so that they compare with what a door
    reads from new notes); P(late) on them; the validation log loss (what `shipdelay train`
    calls)."""
    from features.schema import CATEGORICAL
    from training.evaluate import classification_metrics
    from training.train import score_frame

    p_valid, _ = score_frame(bundle, split.valid)
    loss = classification_metrics(split.valid["is_late"].to_numpy(float), p_valid)["log_loss"]
    rows, nights = reference_rows(settings)
    if len(rows) >= MIN_REFERENCE_ROWS:
        if bundle.spec.reads_notes:
            rows = rows.assign(**bundle.spec.note_features(rows))
        source = (f"shipments in flight at {len(nights)} nightly cut-offs from "
                  f"{nights[0]:%Y-%m-%d %H:%M} to {nights[-1]:%Y-%m-%d %H:%M} UTC")
        span = float((nights[-1] - nights[0]) / pd.Timedelta(days=1)) + REFERENCE_EVERY_DAYS
    else:
        rows = split.train
        if bundle.spec.reads_notes:  # what the trees learned from: each row's out-of-fold notes
            rows = rows.assign(**bundle.spec.note_features(rows, cross_fitted=True))
        booked = rows["booked_at_s"] if "booked_at_s" in rows else pd.Series(dtype=float)
        span = float((booked.max() - booked.min()) / 86400) if len(booked) else float("nan")
        source = f"training window up to {split.bounds['train_end']}"
    p_rows, _ = score_frame(bundle, rows)
    ref = build_reference(version, rows, bundle.spec.features, set(CATEGORICAL), p_rows,
                          loss, source, span)
    save_reference(settings.data_dir, ref)
    return ref
