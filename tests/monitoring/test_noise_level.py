"""The PSI chance level (`drift.noise_level`) against a simulation of chance itself: samples drawn
from a slice's own reference shares (nothing changed) exceed the level about one time in a
thousand where the level is finite, and small samples, whose empty bins PSI's floor turns into
a shift, get no finite level at all; a real shift of the same size is still found."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.drift import noise_level, psi

# P(late) shares of a small world's air shipments on the reference nights: the network's decile
# bins, so a few of them hold 1-3% of the slice (and the missing bin none)
AIR = np.array([0.019, 0.01, 0.016, 0.079, 0.041, 0.17, 0.03, 0.182, 0.214, 0.239, 0.0])
N_REFERENCE = 615
DRAWS = 20_000


def _exceed_rate(shares: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """How often PSI of a chance sample of `n` (the reference drawn again too) exceeds the
    level; and the level."""
    rng = np.random.default_rng(seed)
    level = noise_level(shares, n, N_REFERENCE)
    reference = rng.multinomial(N_REFERENCE, shares, size=DRAWS) / N_REFERENCE
    recent = rng.multinomial(n, shares, size=DRAWS)
    values = np.array([psi(r, c) for r, c in zip(reference, recent)])
    return float((values > level).mean()), level


@pytest.mark.parametrize("n", [500, 1_000, 3_000])
def test_chance_exceeds_a_finite_level_about_one_time_in_a_thousand(n):
    rate, level = _exceed_rate(AIR, n, seed=n)
    assert np.isfinite(level)
    assert rate <= 0.0035, f"{rate:.2%} of chance samples of {n} exceed the level {level:.3f}"


@pytest.mark.parametrize("n", [60, 87, 150, 300])
def test_samples_too_small_for_the_law_get_no_finite_level(n):
    """The chi-square law's level was exceeded 0.6-3% of the time here (87: 1.8%; 300: 0.6%,
    with the reference drawn again too): 1% of 300 is 3 expected shipments."""
    assert noise_level(AIR, n, N_REFERENCE) == float("inf")


def test_a_real_shift_is_above_the_level():
    rng = np.random.default_rng(1)
    shifted = np.roll(AIR[:-1], 2)
    counts = rng.multinomial(1_000, np.append(shifted / shifted.sum(), 0.0))
    assert psi(AIR, counts) > noise_level(AIR, 1_000, N_REFERENCE)
