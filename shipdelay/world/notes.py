"""Free-text notes from drivers, agents and customs: varied, abbreviated, misspelt, and noisy.

A note follows the event's real cause most of the time, is sometimes missing when a cause is
real, and sometimes raises a false alarm on a normal scan, so it carries signal but not truth.
Typos and abbreviations are drawn from a fixed pool of variants (no per-event string work).
"""

from __future__ import annotations

import numpy as np

TEMPLATES: dict[str, list[str]] = {
    "failure_truck": ["truck breakdown, awaiting tow", "tractor engine fault - swap unit",
                      "flat tyre on trailer", "eqpt fail trk", "reefer unit failure"],
    "failure_rail": ["locomotive failure on line", "wagon defect, set out at yard",
                     "signal failure, train held", "rail eqpt issue"],
    "failure_air": ["aircraft tech issue, flight cxl", "AOG - awaiting part",
                    "ULD damaged, rebuild required", "a/c maintenance delay"],
    "failure_ocean": ["engine trouble, vessel slow steaming", "crane breakdown at berth",
                      "reefer container alarm", "vsl mechanical issue"],
    "weather_east_asia": ["typhoon signal no.8, port closed", "heavy rain, ops suspended",
                          "typhoon warning - wx delay", "fog at terminal"],
    "weather_cold": ["snowstorm, roads closed", "icy roads - slow", "blizzard, flights held",
                     "wx delay snow", "storm closed terminal"],
    "weather_other": ["severe weather, ops suspended", "heavy rain flooding", "wx delay",
                      "storm warning, departures held", "high winds, cranes stopped"],
    "congestion": ["yard congested, long gate queue", "vessel waiting at anchorage",
                   "hub backlog - cargo not worked", "congestion at terminal", "cong. at hub",
                   "heavy volume, sorting delayed"],
    "missed": ["missed cutoff, rolled to next departure", "rolled - next sailing",
               "offloaded, rebooked next flight", "missed connection", "missed cut-off"],
    "customs": ["customs inspection - docs missing", "held by customs for exam",
                "commercial invoice discrepancy", "cust hold - HS code query",
                "awaiting duty payment", "x-ray exam ordered"],
    "delivery_fail": ["recipient not available", "addr incorrect, re-attempt tmrw",
                      "consignee closed", "no one home, card left"],
    "neutral": ["ok", "scanned", "all pcs accounted", "on schedule", "loaded", "POD pending",
                "handed to linehaul", "sorted", "in transit"],
}


def _typo(text: str, k: int) -> str:
    """A deterministic misspelling: swap two neighbouring letters, drop one, or shout."""
    if len(text) < 5:
        return text.upper()
    i = 1 + (k * 7) % (len(text) - 3)
    if k % 3 == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if k % 3 == 1:
        return text[:i] + text[i + 1:]
    return text.upper()


def _pool() -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    texts: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    for cause, base in TEMPLATES.items():
        start = len(texts)
        for k, t in enumerate(base):
            texts.extend([t, t, t, _typo(t, k), _typo(t, k + 1)])  # 60% clean, 40% misspelt
        spans[cause] = (start, len(texts))
    return np.array(texts, dtype=object), spans


POOL, SPANS = _pool()


def draw_notes(causes: np.ndarray, rng: np.random.Generator, miss_rate: float = 0.25,
               false_alarm_rate: float = 0.015, neutral_rate: float = 0.06) -> np.ndarray:
    """One note (or None) per event from its cause label ('' = no particular cause)."""
    n = len(causes)
    out = np.full(n, None, dtype=object)
    labels = causes.copy()
    normal = labels == ""
    alarm = normal & (rng.random(n) < false_alarm_rate)
    fake = np.array(["congestion", "customs", "weather_other", "failure_truck"])
    labels[alarm] = fake[rng.integers(0, len(fake), alarm.sum())]
    neutral = normal & ~alarm & (rng.random(n) < neutral_rate)
    labels[neutral] = "neutral"
    keep = (labels != "") & ~((~normal) & (rng.random(n) < miss_rate))
    for cause, (lo, hi) in SPANS.items():
        rows = np.flatnonzero(keep & (labels == cause))
        if len(rows):
            out[rows] = POOL[rng.integers(lo, hi, len(rows))]
    return out
