"""Time-based split of snapshots by booking time: train on the oldest bookings, validate on the
next window, test on the newest, with a gap strictly longer than the label horizon between them.

The label horizon is how long after booking a label is usually known: the 95th percentile of
booking-to-delivery time, rounded up to whole days. A row's label window runs from its booking
to its label, within the horizon for 95% of them. Each gap is the horizon plus one day
(GAP_BEYOND_HORIZON), so the label window of even the last booking a window can hold ends
before the next window opens, and no training label is decided by events inside the validation
or test windows; rows whose label arrives after the next window opens (the slow 5%) are purged
as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

GAP_BEYOND_HORIZON = pd.Timedelta(days=1)  # the unit the horizon is rounded up to


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    bounds: dict[str, pd.Timestamp]
    horizon: pd.Timedelta

    @property
    def gaps(self) -> tuple[pd.Timedelta, pd.Timedelta]:
        """Train-to-validation and validation-to-test gaps between the windows' bounds."""
        b = self.bounds
        return b["valid_start"] - b["train_end"], b["test_start"] - b["valid_end"]


def label_horizon(frame: pd.DataFrame, quantile: float = 0.95) -> pd.Timedelta:
    """How long after booking a label is usually known (rounded up to whole days)."""
    booked = pd.to_datetime(frame["booked_at_s"], unit="s", utc=True)
    days = ((frame["delivered_at"] - booked).dt.total_seconds() / 86400).quantile(quantile)
    return pd.Timedelta(days=float(np.ceil(days)))


def time_split(frame: pd.DataFrame, valid_share: float = 0.15, test_share: float = 0.15,
               horizon: pd.Timedelta | None = None) -> Split:
    """Split labelled snapshots (needs booked_at_s and delivered_at) into train/valid/test."""
    horizon = horizon if horizon is not None else label_horizon(frame)
    gap = horizon + GAP_BEYOND_HORIZON
    booked = pd.to_datetime(frame["booked_at_s"], unit="s", utc=True)
    first, last = booked.min(), booked.max()
    span = last - first
    test_start = last - span * test_share
    valid_end = test_start - gap
    valid_start = valid_end - span * valid_share
    train_end = valid_start - gap
    if train_end <= first:
        raise ValueError(f"not enough history: {span.days} days of bookings cannot hold train, "
                         f"validation and test windows with {gap.days}-day gaps")
    delivered = frame["delivered_at"]
    train = frame[(booked < train_end) & (delivered < valid_start)]
    valid = frame[(booked >= valid_start) & (booked < valid_end) & (delivered < test_start)]
    test = frame[booked >= test_start]
    bounds = {"train_end": train_end, "valid_start": valid_start, "valid_end": valid_end,
              "test_start": test_start}
    return Split(train, valid, test, bounds, horizon)
