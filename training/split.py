"""Time-based split of snapshots by booking time: train on the oldest bookings, validate on the
next window, test on the newest, with a gap strictly longer than the label horizon between them.

The label horizon is how long after booking a label is usually known: the 95th percentile of
booking-to-delivery time, rounded up to whole days. A row's label window runs from its booking
to its label, within the horizon for 95% of them. Each gap is the horizon plus one day
(GAP_BEYOND_HORIZON), so the label window of even the last booking a window can hold ends
before the next window opens, and no training label is decided by events inside the validation
or test windows; rows whose label arrives after the next window opens (the slow 5%) are purged
as well.

A data scientist can choose instead: the test window from a date (`test_from`), the validation
window from a date (`valid_from`), and another gap (`gap`, e.g. shorter on a small data set: the
purge still keeps every training label before the validation window opens, and every
validation label before the test window opens). `SplitError` says what does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

GAP_BEYOND_HORIZON = pd.Timedelta(days=1)  # the unit the horizon is rounded up to


class SplitError(ValueError):
    """The chosen split does not fit the data; `param` names the option to change."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


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


def day(value, param: str) -> pd.Timestamp:
    """A date or instant (ISO text such as 2025-10-01 or 2025-10-01T06:00, or a timestamp) as
    a UTC timestamp; a date or a time without a zone is UTC."""
    try:
        stamp = pd.Timestamp(datetime.fromisoformat(value) if isinstance(value, str) else value)
    except (ValueError, TypeError) as err:
        raise SplitError(f"'{value}' is not a date like 2025-10-01", param) from err
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _share(value: float, param: str) -> float:
    if not 0 < value < 1:
        raise SplitError(f"a share must be between 0 and 1, not {value}", param)
    return value


def time_split(frame: pd.DataFrame, valid_share: float = 0.15, test_share: float = 0.15,
               horizon: pd.Timedelta | None = None, *, test_from=None, valid_from=None,
               gap: pd.Timedelta | None = None) -> Split:
    """Split labelled snapshots (needs booked_at_s and delivered_at) into train/valid/test.

    By default the newest `test_share` of the booking span is the test window and the
    `valid_share` before it (and a gap) the validation window. `test_from` / `valid_from` (a
    date, UTC) open those windows on a date instead; `gap` (default the label horizon plus a
    day) separates the windows. Raises SplitError when a window would be empty."""
    horizon = horizon if horizon is not None else label_horizon(frame)
    gap = horizon + GAP_BEYOND_HORIZON if gap is None else pd.Timedelta(gap)
    if gap < pd.Timedelta(0):
        raise SplitError(f"the gap between windows cannot be negative ({gap})", "--gap-days")
    days = f"{gap / pd.Timedelta(days=1):g}-day"
    booked = pd.to_datetime(frame["booked_at_s"], unit="s", utc=True)
    first, last = booked.min(), booked.max()
    span = last - first
    if test_from is None:
        test_start = last - span * _share(test_share, "--test-share")
    else:
        test_start = day(test_from, "--test-from")
        if not first < test_start <= last:
            raise SplitError(f"--test-from {test_start.date()} must fall within the bookings "
                             f"({first.date()} to {last.date()})", "--test-from")
    valid_end = test_start - gap
    if valid_from is None:
        valid_start = valid_end - span * _share(valid_share, "--valid-share")
    else:
        valid_start = day(valid_from, "--valid-from")
        if valid_start >= test_start:
            raise SplitError(f"--valid-from {valid_start.date()} must be before the test window "
                             f"opens ({test_start.date()})", "--valid-from")
        if valid_start >= valid_end:
            raise SplitError(f"--valid-from {valid_start.date()} leaves no validation window: "
                             f"with a {days} gap before the test window ({test_start.date()}) "
                             f"it must be before {valid_end.date()}", "--valid-from")
    train_end = valid_start - gap
    if train_end <= first:
        raise SplitError(f"not enough history: {span.days} days of bookings from "
                         f"{first.date()} cannot hold a training window before "
                         f"{train_end.date()} ({days} gaps, validation from "
                         f"{valid_start.date()}, test from {test_start.date()}); choose later "
                         "windows or a shorter gap", "--valid-from")
    delivered = frame["delivered_at"]
    train = frame[(booked < train_end) & (delivered < valid_start)]
    valid = frame[(booked >= valid_start) & (booked < valid_end) & (delivered < test_start)]
    test = frame[booked >= test_start]
    for name, rows, option in (("training", train, "--valid-from"),
                               ("validation", valid, "--valid-from"),
                               ("test", test, "--test-from")):
        if rows.empty:
            raise SplitError(f"the {name} window holds no labelled snapshot (train before "
                             f"{train_end.date()}, validation {valid_start.date()} to "
                             f"{valid_end.date()}, test from {test_start.date()}); choose other "
                             "dates or a shorter gap", option)
    bounds = {"train_end": train_end, "valid_start": valid_start, "valid_end": valid_end,
              "test_start": test_start}
    return Split(train, valid, test, bounds, horizon)


@dataclass(frozen=True)
class SplitOptions:
    """How a run splits its training set by booking time (`training.split.time_split`): the
    test window from `test_from` (a date) or the newest `test_share` of the bookings, the
    validation window from `valid_from` or the `valid_share` before it, and `gap_days` between
    windows (None: the label horizon plus one day)."""

    test_from: str | None = None
    valid_from: str | None = None
    test_share: float = 0.15
    valid_share: float = 0.15
    gap_days: float | None = None

    def __post_init__(self):
        """What can be checked before the training set exists (the rest: `time_split`)."""
        dates = {param: day(value, param) for param, value in
                 (("--test-from", self.test_from), ("--valid-from", self.valid_from))
                 if value is not None}
        if len(dates) == 2 and dates["--valid-from"] >= dates["--test-from"]:
            raise SplitError(f"--valid-from {self.valid_from} must be before --test-from "
                             f"{self.test_from}", "--valid-from")
        for param, share in (("--test-share", self.test_share),
                             ("--valid-share", self.valid_share)):
            if not 0 < share < 1:
                raise SplitError(f"a share must be between 0 and 1, not {share:g}", param)
        if self.test_share + self.valid_share >= 1:
            raise SplitError("the test and validation shares leave nothing to train on: "
                             "together they must stay below 1", "--valid-share")
        if self.gap_days is not None and not self.gap_days >= 0:
            raise SplitError(f"the gap must be 0 days or more, not {self.gap_days:g}",
                             "--gap-days")

    def split(self, frame: pd.DataFrame) -> Split:
        gap = None if self.gap_days is None else pd.Timedelta(days=self.gap_days)
        return time_split(frame, self.valid_share, self.test_share, test_from=self.test_from,
                          valid_from=self.valid_from, gap=gap)

    def params(self) -> dict[str, str]:
        """The choice as MLflow parameters ("" where a default rule applied)."""
        return {"split.test_from": self.test_from or "",
                "split.valid_from": self.valid_from or "",
                "split.test_share": "" if self.test_from else f"{self.test_share:g}",
                "split.valid_share": "" if self.valid_from else f"{self.valid_share:g}",
                "split.gap_days": "" if self.gap_days is None else f"{self.gap_days:g}"}
