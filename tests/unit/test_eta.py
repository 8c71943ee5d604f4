"""Delivery-time quantiles given "not delivered yet" (`serving.eta`): never before now,
unchanged when every quantile is after now, in order, and equal to a Monte-Carlo estimate
drawn from the same distribution by rejection (draws before now thrown away)."""

import numpy as np
import pytest

from serving.eta import conditional_delays


def _draws(q10: float, q50: float, q90: float, n: int, rng) -> np.ndarray:
    """Delays drawn from the distribution the module describes, built here on its own: 10% at
    P10, uniform between P10 and P50 (40%) and between P50 and P90 (40%), 10% exponential
    beyond P90 with the scale that continues the density."""
    scale = max((q90 - q50) / 4.0, 1.0)
    part = rng.choice(4, size=n, p=[0.1, 0.4, 0.4, 0.1])
    return np.select([part == 0, part == 1, part == 2],
                     [np.full(n, q10), rng.uniform(q10, q50, n), rng.uniform(q50, q90, n)],
                     q90 + rng.exponential(scale, n))


CASES = [  # q10, q50, q90, now (hours after the promise)
    (-20.0, 5.0, 40.0, 0.0),     # now between P10 and P50
    (-20.0, 5.0, 40.0, 20.0),    # between P50 and P90
    (-20.0, 5.0, 40.0, 50.0),    # past every quantile (the tail)
    (-10.0, -10.0, 30.0, -5.0),  # P10 = P50
    (0.0, 12.0, 12.0, 13.0),     # P50 = P90: the tail's smallest scale
]


@pytest.mark.parametrize(("q10", "q50", "q90", "now"), CASES)
def test_matches_a_monte_carlo_estimate(q10, q50, q90, now):
    rng = np.random.default_rng(7)
    draws = _draws(q10, q50, q90, 400_000, rng)
    later = draws[draws > now]
    assert len(later) > 5_000
    expected = np.quantile(later, [0.1, 0.5, 0.9])
    got = np.array([v[0] for v in conditional_delays([q10], [q50], [q90], [now])])
    spread = max(q90 - q10, 4.0)
    np.testing.assert_allclose(got, expected, atol=0.01 * spread)


def test_never_before_now_and_in_order():
    rng = np.random.default_rng(3)
    q = np.sort(rng.normal(0, 50, (5000, 3)), axis=1)
    now = rng.normal(0, 200, 5000)
    d10, d50, d90 = conditional_delays(q[:, 0], q[:, 1], q[:, 2], now)
    assert (d10 >= now).all()
    assert (d10 <= d50).all() and (d50 <= d90).all()
    assert np.isfinite(d90).all()


def test_unchanged_when_every_quantile_is_after_now():
    q10, q50, q90 = np.array([-5.0, 10.0]), np.array([3.0, 20.0]), np.array([9.0, 80.0])
    got = conditional_delays(q10, q50, q90, np.array([-5.5, -100.0]))
    for a, b in zip(got, (q10, q50, q90)):
        np.testing.assert_array_equal(a, b)


def test_crossed_quantiles_are_sorted_and_missing_stays_missing():
    d10, d50, d90 = conditional_delays([9.0, np.nan], [3.0, 1.0], [-5.0, 2.0], [-100.0, 0.0])
    assert (d10[0], d50[0], d90[0]) == (-5.0, 3.0, 9.0)
    # an unknown "now" (no promise): the model's quantiles as they are
    d10, d50, d90 = conditional_delays([1.0], [2.0], [3.0], [np.nan])
    assert (d10[0], d50[0], d90[0]) == (1.0, 2.0, 3.0)
