"""Features that depend on the moment of the request, computed the same way everywhere.

The Feast on-demand view, the training-set builder, the online readers, the stream and the
batch job all call `request_features`, so "hours to promised" means the same thing in training
and in serving.
"""

from __future__ import annotations

import numpy as np

REQUEST_TIME = "request_time_s"  # epoch seconds of the question "how late at this moment?"
# The stored values request_features reads, in its argument order (before the request time).
REQUEST_INPUTS = ("booked_at_s", "promised_at_s", "planned_arrival_s", "last_event_s",
                  "next_planned_s")


def request_features(booked_at_s, promised_at_s, planned_arrival_s, last_event_s,
                     next_planned_s, request_time_s) -> dict[str, np.ndarray]:
    """hours_to_promised, transit_elapsed_frac (share of the planned booking-to-arrival time
    gone), hours_since_last_scan (NaN before any scan) and hours_overdue: how long the next
    planned milestone not yet seen is past due, 0 before it is due, NaN when none is planned."""
    booked = np.asarray(booked_at_s, dtype=float)
    promised = np.asarray(promised_at_s, dtype=float)
    planned = np.asarray(planned_arrival_s, dtype=float)
    last = np.asarray(last_event_s, dtype=float)
    upcoming = np.asarray(next_planned_s, dtype=float)
    now = np.asarray(request_time_s, dtype=float)
    span = np.where(planned > booked, planned - booked, np.nan)
    late_by = now - upcoming
    return {
        "hours_to_promised": (promised - now) / 3600.0,
        "transit_elapsed_frac": (now - booked) / span,
        "hours_since_last_scan": (now - last) / 3600.0,
        # NaN stays NaN (np.maximum propagates it)
        "hours_overdue": np.maximum(late_by, 0.0) / 3600.0,
    }
