"""`shipdelay check-parity`: the online answer and the batch's answer at one instant, compared.

For a sample of the shipments in flight at the instant (default: the lake's now, as the nightly
batch, or the online store's roll mark when that is later), the feature vectors are read twice: through the service's online reader
(`features.online_fast.OnlineReader`, the online store) and through the point-in-time join the
training set and the nightly batch use (`training.dataset.point_in_time`, the offline store).
Both are scored with the champion (`serving.scorer.Scorer`). The report gives, per feature,
the largest difference (numbers: the absolute difference, a value on one side only counting
as infinite; text: the rows that differ), and the largest difference in P(late) and the delay
quantiles. Anything beyond float rounding is a skew between the doors (docs/design.md,
"Features": the value at an instant), and the command exits 1.

The online store holds one row per entity, the newest (`features.roll`): it can be compared at
its roll mark or later, not before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features import marks
from features.online_direct import open_direct
from features.online_fast import OnlineReader
from features.request_time import REQUEST_TIME
from features.schema import CATEGORICAL, model_feature_names
from features.store import get_store, offline_dir
from registry.loader import load_by_alias
from serving.batch import in_flight, lake_now, utc
from serving.scorer import Scorer
from shipdelay.lake import Lake
from shipdelay.settings import Settings
from training.dataset import point_in_time

RTOL = ATOL = 1e-9  # float rounding: anything larger is a skew
SCORES = ("p_late", "delay_p50_h", "delay_p90_h")


class ParityError(RuntimeError):
    """The check cannot run (no feature store, no champion, an instant the store cannot give)."""


@dataclass
class ParityReport:
    as_of: pd.Timestamp
    compared: int  # shipments known to both doors
    known_differs: list[str] = field(default_factory=list)  # known on one side only
    features: pd.DataFrame | None = None  # feature, largest difference, rows differing
    scores: dict[str, float] = field(default_factory=dict)  # largest |difference| per score
    worst: str | None = None  # the shipment with the largest P(late) difference
    online_mark: pd.Timestamp | None = None
    offline_mark: pd.Timestamp | None = None

    @property
    def ok(self) -> bool:
        beyond = self.features is not None and (self.features["rows"] > 0).any()
        off_scores = any(not _close(v, 0.0) for v in self.scores.values())
        return not (beyond or off_scores or self.known_differs)


def _close(a, b) -> bool:
    return bool(np.isclose(a, b, rtol=RTOL, atol=ATOL))


def compare(online: pd.DataFrame, offline: pd.DataFrame) -> pd.DataFrame:
    """Per model feature: the largest difference and the rows that differ beyond rounding
    (rows aligned; numbers compared as numbers, categories as text; missing on both sides is
    equal, on one side only is a difference of inf)."""
    rows = []
    for col in model_feature_names():
        a, b = online[col], offline[col]
        if col in CATEGORICAL:
            na, nb = a.isna().to_numpy(), b.isna().to_numpy()
            differs = (na != nb) | (~na & ~nb & (a.astype(str).to_numpy()
                                                 != b.astype(str).to_numpy()))
            largest = float(differs.any())
        else:
            x = pd.to_numeric(a, errors="coerce").to_numpy(dtype=float)
            y = pd.to_numeric(b, errors="coerce").to_numpy(dtype=float)
            gap = np.where(np.isnan(x) & np.isnan(y), 0.0,
                           np.where(np.isnan(x) | np.isnan(y), np.inf, np.abs(x - y)))
            differs = ~np.isclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True)
            largest = float(gap.max()) if len(gap) else 0.0
        rows.append({"feature": col, "largest": largest, "rows": int(differs.sum())})
    return pd.DataFrame(rows).sort_values(["rows", "largest"], ascending=False,
                                          ignore_index=True)


def check_parity(settings: Settings, sample: int = 200, as_of=None,
                 seed: int = 0) -> ParityReport:
    """Compare the two doors on up to `sample` in-flight shipments at `as_of` (see module)."""
    lake, offline = Lake(settings.lake_dir), offline_dir(settings)
    if not (offline / "shipment_progress").exists():
        raise ParityError(f"no feature store at {offline}: run `shipdelay features build` first")
    direct = open_direct(settings)
    try:
        online_mark = marks.online_mark(direct)
    finally:
        direct.close()
    if as_of is not None:
        t = utc(as_of)
    else:  # the lake's now, or the instant the online store was rolled to when that is later
        t = lake_now(lake)
        t = max(t, online_mark) if online_mark is not None else t
    if online_mark is not None and t < online_mark:
        raise ParityError(f"the online store holds values as of {online_mark:%Y-%m-%d %H:%M:%S}"
                          f" UTC, after {t:%Y-%m-%d %H:%M:%S}: pass --as-of at or after it")
    snaps = in_flight(lake, t)
    if len(snaps) > sample:
        snaps = snaps.sample(sample, random_state=seed).sort_values("shipment_id")
    ids = snaps["shipment_id"].astype(str).tolist()
    report = ParityReport(t, 0, online_mark=online_mark, offline_mark=marks.offline_mark(offline))
    if not ids:
        report.features = compare(pd.DataFrame(columns=model_feature_names()),
                                  pd.DataFrame(columns=model_feature_names()))
        return report
    joined = point_in_time(offline, snaps).set_index("shipment_id").loc[ids]
    online = OnlineReader(get_store(settings)).vectors(ids, t).set_index("shipment_id").loc[ids]
    known_off = joined["booked_at_s"].notna().to_numpy()
    known_on = online["known"].to_numpy(bool)
    report.known_differs = [i for i, a, b in zip(ids, known_on, known_off) if a != b]
    both = [i for i, a, b in zip(ids, known_on, known_off) if a and b]
    report.compared = len(both)
    online, joined = online.loc[both], joined.loc[both]
    report.features = compare(online, joined)
    if both:
        scorer = Scorer(load_by_alias(settings))
        now = np.full(len(both), t.timestamp())
        a = scorer.score(online.reset_index().assign(**{REQUEST_TIME: now}), reasons=False)
        b = scorer.score(joined.reset_index().assign(**{REQUEST_TIME: now}), reasons=False)
        for c in SCORES:
            gap = np.abs(a[c].to_numpy(float) - b[c].to_numpy(float))
            report.scores[c] = float(np.nanmax(gap)) if len(gap) else 0.0
        worst = np.abs(a["p_late"].to_numpy(float) - b["p_late"].to_numpy(float))
        report.worst = both[int(np.argmax(worst))] if worst.max() > 0 else None
    return report


def summary(report: ParityReport) -> str:
    """The one line operators read (and `make demo` shows)."""
    features = report.features if report.features is not None else pd.DataFrame(
        {"largest": [], "rows": []})
    differing = features[features["rows"] > 0]
    largest = differing["largest"].max() if len(differing) else 0.0
    verdict = "one answer on both doors" if report.ok else "SKEW between the doors"
    one_side = (f", {len(report.known_differs)} known on one side only"
                if report.known_differs else "")
    return (f"parity at {report.as_of:%Y-%m-%d %H:%M:%S} UTC: {report.compared} in-flight "
            f"shipments, {len(differing)} of {len(features)} features differ (largest "
            f"{largest:g}), P(late) largest difference {report.scores.get('p_late', 0.0):.3g}"
            f"{one_side}: {verdict}")
