"""What the model has to beat, and what it cannot beat.

Each baseline turns a test frame into P(late) per row, fitted on the train frame only:
- behind_schedule: the dispatcher's rule "it's late if it's behind schedule now" (current slip),
  calibrated by isotonic regression so log loss and ECE compare; its ranking is the slip's.
- lane_history: the lane's historical late rate.
- logistic: a standardized logistic regression on a handful of numeric signals.
The ceiling is the simulator's P(late | full hidden world state), joined from the lake.

Scores are clipped to [PROB_CLIP, 1 - PROB_CLIP], the bound every score is evaluated with
(`training.evaluate`), so one confident miss does not make a baseline's log loss infinite.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from training.evaluate import clip_scores

LOGISTIC_FEATURES = ["slip_h", "slip_trend_h", "promised_slack_h", "planned_transit_h",
                     "hours_to_promised", "transit_elapsed_frac", "customs_holds", "exceptions",
                     "lane_late_rate_28d", "hub_dep_slip_24h"]
_clip = clip_scores


def _label(train: pd.DataFrame) -> np.ndarray:
    return train["is_late"].to_numpy(float)


def _slip(frame: pd.DataFrame) -> np.ndarray:
    # No scan yet means no evidence of slip: treat as on schedule.
    return pd.to_numeric(frame["slip_h"], errors="coerce").fillna(0.0).to_numpy(float)


def behind_schedule(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """P(late) as a non-decreasing function of the current slip (hours), fitted on train."""
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)
    iso.fit(_slip(train), _label(train))
    return _clip(iso.predict(_slip(test)))


def lane_history(train: pd.DataFrame, test: pd.DataFrame, prior_rows: float = 10.0) -> np.ndarray:
    """The lane's late rate: the point-in-time lane_late_rate_28d where the row has one, else the
    lane's late rate over the train shipments, else the overall train late rate.

    The train lane rate is shrunk toward the overall rate by `prior_rows` pseudo-shipments, so a
    lane seen twice does not get a rate of 0 or 1 (prior_rows=0 gives the raw rate). Rates are
    counted per shipment, not per snapshot, since every snapshot of a shipment shares its label.
    """
    overall_rows = train.drop_duplicates("shipment_id") if "shipment_id" in train else train
    overall = float(overall_rows["is_late"].astype(float).mean()) if len(overall_rows) else 0.5
    stats = overall_rows.groupby(overall_rows["lane_id"].astype(str))["is_late"].agg(
        ["sum", "count"])
    lane_rate = (stats["sum"] + prior_rows * overall) / (stats["count"] + prior_rows)
    from_train = test["lane_id"].astype(str).map(lane_rate).astype(float)
    prior = from_train.fillna(overall)
    recent = pd.to_numeric(test["lane_late_rate_28d"], errors="coerce")
    if "lane_volume_28d" in test:
        # the recent rate weighs as much as its volume of outcomes: 1 of 1 late is not "always late"
        volume = pd.to_numeric(test["lane_volume_28d"], errors="coerce").fillna(0.0)
        denom = volume + prior_rows
        recent = ((recent * volume + prior * prior_rows) / denom).where(denom > 0, recent)
    return _clip(recent.fillna(prior).to_numpy(float))


def _design(frame: pd.DataFrame, medians: pd.Series) -> np.ndarray:
    x = frame[LOGISTIC_FEATURES].apply(pd.to_numeric, errors="coerce").astype(float)
    missing = x.isna().to_numpy(float)
    return np.hstack([x.fillna(medians).to_numpy(float), missing])


def logistic(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Logistic regression on LOGISTIC_FEATURES: NaN -> train median plus a missing indicator,
    standardized on train."""
    medians = train[LOGISTIC_FEATURES].apply(pd.to_numeric, errors="coerce").median().fillna(0.0)
    x_train = _design(train, medians)
    scaler = StandardScaler().fit(x_train)
    y = _label(train)
    if len(np.unique(y)) < 2:  # nothing to separate: the base rate is the best it can say
        return _clip(np.full(len(test), y.mean() if len(y) else 0.5))
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(x_train), y)
    return _clip(model.predict_proba(scaler.transform(_design(test, medians)))[:, 1])


def _key(frame: pd.DataFrame) -> pd.DataFrame:
    as_of = pd.to_datetime(frame["as_of"], utc=True).astype("datetime64[ns, UTC]")
    return pd.DataFrame({"shipment_id": frame["shipment_id"].astype(str).to_numpy(),
                         "as_of": as_of.to_numpy()})


def ceiling(test: pd.DataFrame, ceiling_table: pd.DataFrame) -> pd.Series:
    """The lake's ceiling p_late for each test row, by (shipment_id, as_of); NaN without one."""
    table = _key(ceiling_table).assign(p_late=ceiling_table["p_late"].to_numpy(float))
    table = table.drop_duplicates(["shipment_id", "as_of"], keep="last")
    joined = _key(test).merge(table, on=["shipment_id", "as_of"], how="left")
    return pd.Series(joined["p_late"].to_numpy(float), index=test.index, name="ceiling")


def all_baselines(train: pd.DataFrame, test: pd.DataFrame,
                  ceiling_table: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """Every baseline's scores on test (and the ceiling's, NaN where it has no row)."""
    out = {"behind_schedule": behind_schedule(train, test),
           "lane_history": lane_history(train, test),
           "logistic": logistic(train, test)}
    if ceiling_table is not None:
        out["ceiling"] = ceiling(test, ceiling_table).to_numpy()
    return out


__all__ = [
    "LOGISTIC_FEATURES",
    "all_baselines",
    "behind_schedule",
    "ceiling",
    "lane_history",
    "logistic",
]
