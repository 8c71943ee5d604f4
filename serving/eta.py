"""Delivery-time quantiles of a shipment still in flight, given that it is not delivered yet.

The model predicts the P10, P50 and P90 of a shipment's delay (hours after its promise). Read
as they are, they may put its delivery before "now": a shipment 300 h past its promise whose
P90 is 40 h late would be "expected" 260 h ago. A shipment still in flight at instant t will be
delivered after t, so its delivery time T is read from the distribution of T given T > t.

The distribution behind the three quantiles (`conditional_delays`):
- below P10: the lowest 10% at P10 itself (the model says nothing about how early the earliest
  deliveries are, and a shipment in flight before its P10 is no news), so quantiles that are all
  after now come out unchanged;
- between P10, P50 and P90: the cumulative probability rises linearly (0.1 to 0.5 to 0.9), the
  monotone piecewise-linear CDF through the predicted quantiles;
- above P90: an exponential tail, 1 - 0.1 exp(-(x - P90) / s), whose density at P90 matches the
  segment below it: s = (P90 - P50) / 4, at least `MIN_TAIL_H`. It has no end, so a shipment
  past all its quantiles still has a finite, widening forecast: T - t is then exponential of
  scale s (memoryless), its quantiles t + s ln(1 / (1 - p)).

Conditioning on T > t rescales the CDF above t: the conditional p-quantile is the unconditional
u-quantile with u = F(t) + p (1 - F(t)). Every quantile is therefore at or after t, they stay in
order (P10 <= P50 <= P90), and none moves when t is before P10.
"""

from __future__ import annotations

import numpy as np

LEVELS = (0.1, 0.5, 0.9)
MIN_TAIL_H = 1.0  # the tail's scale when P50 and P90 (nearly) coincide


def _cdf(x: np.ndarray, q10: np.ndarray, q50: np.ndarray, q90: np.ndarray,
         scale: np.ndarray) -> np.ndarray:
    """F(x) of the distribution above (0 below P10)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        low = 0.1 + 0.4 * np.clip((x - q10) / (q50 - q10), 0.0, 1.0)
        high = 0.5 + 0.4 * np.clip((x - q50) / (q90 - q50), 0.0, 1.0)
    low = np.where(q50 > q10, low, 0.5)  # an empty segment: its mass sits at its end
    high = np.where(q90 > q50, high, 0.9)
    tail = 1.0 - 0.1 * np.exp(-np.maximum(x - q90, 0.0) / scale)
    return np.select([x < q10, x < q50, x < q90], [0.0, low, high], tail)


def _quantile(u: np.ndarray, q10: np.ndarray, q50: np.ndarray, q90: np.ndarray,
              scale: np.ndarray) -> np.ndarray:
    """F's inverse (the smallest x with F(x) >= u)."""
    low = q10 + np.clip((u - 0.1) / 0.4, 0.0, 1.0) * (q50 - q10)
    high = q50 + np.clip((u - 0.5) / 0.4, 0.0, 1.0) * (q90 - q50)
    with np.errstate(divide="ignore"):
        tail = q90 + scale * np.log(0.1 / np.maximum(1.0 - u, 1e-300))
    return np.select([u <= 0.1, u <= 0.5, u <= 0.9], [q10, low, high], tail)


def conditional_delays(q10, q50, q90, now) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P10, P50 and P90 of the delay given that delivery comes after `now` (all in hours after
    the promise; arrays, or scalars broadcast). Quantiles that cross are sorted first; NaN in,
    NaN out. See the module docstring for the distribution and the rule."""
    q = np.sort(np.column_stack(np.broadcast_arrays(*(np.asarray(v, dtype=float)
                                                      for v in (q10, q50, q90)))), axis=1)
    q10, q50, q90 = q[:, 0], q[:, 1], q[:, 2]
    t = np.broadcast_to(np.asarray(now, dtype=float), q10.shape)
    scale = np.maximum((q90 - q50) / 4.0, MIN_TAIL_H)
    known = ~np.isnan(t)
    past_all = known & (t >= q90)  # memoryless tail: exact, no 1 - F(t) underflow
    f_t = np.where(known, _cdf(np.where(known, t, -np.inf), q10, q50, q90, scale), 0.0)
    out = []
    for p in LEVELS:
        x = _quantile(f_t + p * (1.0 - f_t), q10, q50, q90, scale)
        x = np.where(past_all, t + scale * np.log(1.0 / (1.0 - p)), x)
        out.append(np.where(known, np.maximum(x, t), x))  # never before now (rounding)
    return out[0], out[1], out[2]
