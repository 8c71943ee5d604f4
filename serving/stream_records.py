"""The stream's output messages as JSON, serialized a whole frame at a time (pandas' JSON writer,
one line per record), each with its Kafka key (the shipment id)."""

from __future__ import annotations

import numpy as np
import pandas as pd

RISK_FIELDS = ["shipment_id", "p_late", "risk_band", "delay_p50_h", "delay_p90_h", "eta",
               "eta_p10", "eta_p90", "delivered", "last_event_type", "current_hub", "slip_h",
               "previous_p_late", "as_of", "events_applied", "first_produced_ms",
               "model_version"]
ALERT_FIELDS = ["alert_id", "shipment_id", "kind", "p_late", "previous_p_late", "threshold",
                "jump", "risk_band", "eta", "reasons", "as_of", "model_version"]
_TIMES = ("eta", "eta_p10", "eta_p90", "as_of")


def _iso(frame: pd.DataFrame) -> pd.DataFrame:
    """Times as ISO-8601 UTC text at microseconds ("...T12:00:00.000000Z"; missing: null), by
    numpy's vectorized formatter (pandas' strftime formats element by element)."""
    out = frame.copy()
    for c in _TIMES:
        if c in out:
            t = pd.to_datetime(out[c], utc=True, errors="coerce", cache=False)
            text = np.char.add(np.datetime_as_string(
                t.dt.tz_localize(None).to_numpy().astype("M8[us]"), unit="us"), "Z")
            out[c] = pd.Series(text, index=out.index, dtype=object).where(t.notna(), None)
    return out


def _lines(frame: pd.DataFrame) -> list[bytes]:
    if frame.empty:
        return []
    text = frame.to_json(orient="records", lines=True, double_precision=6)
    return [line for line in text.encode().split(b"\n") if line]


def risk_records(risk: pd.DataFrame) -> tuple[list[bytes], list[bytes]]:
    if risk.empty:
        return [], []
    frame = _iso(risk.reindex(columns=RISK_FIELDS))
    frame["scored_at"] = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return _lines(frame), frame["shipment_id"].astype(str).str.encode("utf-8").tolist()


def alert_records(alerts: pd.DataFrame, rule) -> tuple[list[bytes], list[bytes]]:
    if alerts.empty:
        return [], []
    frame = _iso(alerts.assign(threshold=rule.threshold, jump=rule.jump)
                 .reindex(columns=ALERT_FIELDS))
    return _lines(frame), frame["shipment_id"].astype(str).str.encode("utf-8").tolist()
