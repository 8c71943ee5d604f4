"""Time-based split of snapshots by booking time: train on the oldest bookings, validate on the
next window, test on the newest, with a gap longer than the label horizon between them.

The gap is the label horizon (the 95th percentile of booking-to-delivery time), so no training
label is decided by events inside the validation or test windows; rows whose label arrives after
the next window opens are purged as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    bounds: dict[str, pd.Timestamp]
    horizon: pd.Timedelta


def label_horizon(frame: pd.DataFrame, quantile: float = 0.95) -> pd.Timedelta:
    """How long after booking a label is usually known (rounded up to whole days)."""
    booked = pd.to_datetime(frame["booked_at_s"], unit="s", utc=True)
    days = ((frame["delivered_at"] - booked).dt.total_seconds() / 86400).quantile(quantile)
    return pd.Timedelta(days=float(np.ceil(days)))


def time_split(frame: pd.DataFrame, valid_share: float = 0.15, test_share: float = 0.15,
               horizon: pd.Timedelta | None = None) -> Split:
    """Split labelled snapshots (needs booked_at_s and delivered_at) into train/valid/test."""
    horizon = horizon if horizon is not None else label_horizon(frame)
    booked = pd.to_datetime(frame["booked_at_s"], unit="s", utc=True)
    first, last = booked.min(), booked.max()
    span = last - first
    test_start = last - span * test_share
    valid_end = test_start - horizon
    valid_start = valid_end - span * valid_share
    train_end = valid_start - horizon
    if train_end <= first:
        raise ValueError(f"not enough history: {span.days} days of bookings cannot hold train, "
                         f"validation and test windows with {horizon.days}-day gaps")
    delivered = frame["delivered_at"]
    train = frame[(booked < train_end) & (delivered < valid_start)]
    valid = frame[(booked >= valid_start) & (booked < valid_end) & (delivered < test_start)]
    test = frame[booked >= test_start]
    bounds = {"train_end": train_end, "valid_start": valid_start, "valid_end": valid_end,
              "test_start": test_start}
    return Split(train, valid, test, bounds, horizon)
