"""Money at stake: the expected penalty of each shipment in flight.

A late delivery costs `per_late` once plus `per_hour` for every hour late (Settings defaults,
optionally overridden per customer or per service level by a small CSV file). A shipment's
expected exposure is

    P(late) x per_late + E[hours late] x per_hour,

where E[hours late] = E[max(D, 0)] for the predicted delay D. The model gives D's median (P50)
and P90; D is taken as normal with mean P50 and standard deviation (P90 - P50) / z90, for which
E[max(D, 0)] = mu * Phi(mu / s) + s * phi(mu / s) in closed form (vectorized).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr

Z90 = 1.2815515655446004  # the standard normal's 90th percentile


@dataclass(frozen=True)
class Penalties:
    """Default penalty terms and overrides (frames with a key column, per_late, per_hour)."""

    per_late: float
    per_hour: float
    by_customer: pd.DataFrame | None = None
    by_service_level: pd.DataFrame | None = None

    @classmethod
    def from_settings(cls, settings) -> Penalties:
        return cls.load(settings.penalty_per_late, settings.penalty_per_hour,
                        settings.penalties_file)

    @classmethod
    def load(cls, per_late: float, per_hour: float, path: Path | None) -> Penalties:
        """Defaults, plus the overrides of `path` (CSV: customer_id or service_level, per_late,
        per_hour; an empty cell keeps the default). A bad file is a ValueError naming it."""
        if path is None:
            return cls(per_late, per_hour)
        try:
            table = pd.read_csv(path, dtype={"customer_id": str, "service_level": str})
        except (OSError, pd.errors.ParserError) as err:
            raise ValueError(f"cannot read the penalties file {path}: {err}") from None
        missing = {"per_late", "per_hour"} - set(table.columns)
        if missing or not ({"customer_id", "service_level"} & set(table.columns)):
            raise ValueError(f"the penalties file {path} needs the columns customer_id or "
                             "service_level, per_late and per_hour")
        for col in ("per_late", "per_hour"):
            table[col] = pd.to_numeric(table[col], errors="coerce")
            if (table[col] < 0).any():
                raise ValueError(f"the penalties file {path} has a negative {col}")
        parts = {}
        for key in ("customer_id", "service_level"):
            if key in table:
                rows = table[table[key].notna()][[key, "per_late", "per_hour"]]
                parts[key] = rows.drop_duplicates(key, keep="last")
        return cls(per_late, per_hour, parts.get("customer_id"), parts.get("service_level"))

    def terms(self, customer: pd.Series, service_level: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Per shipment (per_late, per_hour): a customer's override first, then its service
        level's, then the defaults."""
        late = np.full(len(customer), float(self.per_late))
        hour = np.full(len(customer), float(self.per_hour))
        for table, keys in ((self.by_service_level, service_level), (self.by_customer, customer)):
            if table is None or table.empty:
                continue
            key = table.columns[0]
            lookup = table.set_index(key)
            for col, target in (("per_late", late), ("per_hour", hour)):
                value = pd.Series(keys.to_numpy()).map(lookup[col]).to_numpy(dtype=float)
                ok = np.isfinite(value)
                target[ok] = value[ok]
        return late, hour


def expected_hours_late(p50: np.ndarray, p90: np.ndarray) -> np.ndarray:
    """E[max(D, 0)] for D normal with median `p50` and 90th percentile `p90` (a spread of zero
    or less: D is `p50` for sure). Missing quantiles give 0."""
    mu = np.nan_to_num(np.asarray(p50, dtype=float), nan=0.0)
    s = np.nan_to_num((np.asarray(p90, dtype=float) - mu) / Z90, nan=0.0)
    sure = s <= 0
    s_safe = np.where(sure, 1.0, s)
    z = mu / s_safe
    spread = mu * ndtr(z) + s_safe * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return np.where(sure, np.maximum(mu, 0.0), spread)


def exposure(frame: pd.DataFrame, penalties: Penalties) -> pd.DataFrame:
    """`frame` (p_late, delay_p50_h, delay_p90_h, customer, service_level) with the expected
    hours late, the penalty terms and `exposure`, the expected penalty."""
    out = frame.copy()
    level = out["service_level"] if "service_level" in out else pd.Series(None, index=out.index)
    per_late, per_hour = penalties.terms(out["customer"].astype(object), level.astype(object))
    hours = expected_hours_late(out["delay_p50_h"].to_numpy(dtype=float),
                                out["delay_p90_h"].to_numpy(dtype=float))
    p = np.nan_to_num(out["p_late"].to_numpy(dtype=float), nan=0.0)
    out["expected_hours_late"] = hours
    out["per_late"], out["per_hour"] = per_late, per_hour
    out["exposure"] = p * per_late + hours * per_hour
    return out


def money_text(amount: float) -> str:
    """An amount for people: "12,400"; thousands as "1.2 M" beyond a million."""
    if not np.isfinite(amount):
        return "-"
    if abs(amount) >= 1_000_000:
        return f"{amount / 1_000_000:.1f} M"
    return f"{amount:,.0f}"
