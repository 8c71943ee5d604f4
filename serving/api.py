"""The HTTP contract of the prediction service: request and response models, and the pure
functions that turn scorer output into per-shipment answers.

Requests are validated here, before anything is read or scored, so a bad request is a 4xx whose
message names the field (docs/design.md, principle 7). A request that is valid as a whole but names a
shipment that cannot be scored gets an answer for that item (`ok: false` and an `error`); the
other items are scored as usual.

Staleness: a shipment in flight whose last tracking scan is older than the longest normal gap
between scans on its current mode (`MAX_SCAN_GAP_H`: a few days on a truck or a plane, weeks at
sea; `MAX_FEATURE_AGE_H` when the mode is unknown) is still scored, because the model sees
`hours_since_last_scan` itself and was trained on such gaps, but the item says `stale: true`
with a warning: the tracking feed for it may have stopped and the forecast rests on old facts.
A flat limit would not do: in the simulated world half of all shipments at sea go more than
72 h without a scan, and 99% of gaps between scans stay under 43 h by air, 102 h by road,
390 h by rail and 714 h at sea. No scan yet (booked, not picked up) is not stale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    field_validator,
)

from features.schema import CATEGORICAL, TEXT_FEATURES, model_feature_names
from serving.columns import as_numbers

MAX_IDS = 500
MAX_ROWS = 200  # a full row is ~2 kB of JSON: 200 rows stay well under the 1 MB limit
MAX_ID_LENGTH = 64
MAX_FEATURE_AGE_H = 72.0  # staleness limit when the current mode is unknown
MAX_SCAN_GAP_H = {"air": 72.0, "truck": 120.0, "rail": 21 * 24.0, "ocean": 42 * 24.0}

UNKNOWN = "unknown shipment"
DELIVERED = "already delivered"
NO_MODEL = "no model loaded"
FEATURES_UNAVAILABLE = "feature store unavailable"
SCORING_FAILED = "scoring failed"
ID_FIELD = "shipment_id"

ShipmentId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
# bool is refused on purpose (Strict*): `true` is not a number of anything
FeatureValue = StrictInt | StrictFloat | StrictStr | None


class PredictRequest(BaseModel):
    """Score shipments as the online feature store knows them now."""

    model_config = ConfigDict(extra="forbid")

    shipment_ids: Annotated[list[ShipmentId], Field(min_length=1, max_length=MAX_IDS)] = Field(
        description=f"1 to {MAX_IDS} distinct shipment ids, each 1 to {MAX_ID_LENGTH} characters",
        json_schema_extra={"uniqueItems": True})

    @field_validator("shipment_ids")
    @classmethod
    def _distinct(cls, ids: list[str]) -> list[str]:
        seen: set[str] = set()
        repeated = [i for i in ids if i in seen or seen.add(i)]
        if repeated:
            shown = ", ".join(sorted(set(repeated))[:5])
            raise ValueError(f"duplicate shipment id(s): {shown}")
        return ids


def row_problems(row: dict[str, object], features: Iterable[str] | None = None) -> list[str]:
    """What is wrong with one what-if row: missing or unknown fields, values of the wrong kind."""
    features = list(features if features is not None else model_feature_names())
    categorical = {*CATEGORICAL, *TEXT_FEATURES}
    problems = []
    missing = [f for f in features if f not in row]
    if missing:
        problems.append("missing model feature(s): " + ", ".join(missing))
    unknown = sorted(set(row) - set(features) - {ID_FIELD})
    if unknown:
        problems.append("unknown field(s): " + ", ".join(unknown))
    if ID_FIELD in row and not (isinstance(row[ID_FIELD], str)
                                and 1 <= len(row[ID_FIELD]) <= MAX_ID_LENGTH):
        problems.append(f"{ID_FIELD} must be a string of 1 to {MAX_ID_LENGTH} characters")
    for name in features:
        value = row.get(name)
        if value is None:
            continue  # absent is reported above; null means "not known", as online
        if name in categorical:
            if not isinstance(value, str):
                problems.append(f"{name} must be a string or null")
        elif isinstance(value, str):
            problems.append(f"{name} must be a number or null")
        elif not _finite(value):
            problems.append(f"{name} must be a finite number (at most ~1.8e308) or null")
    return problems


def _finite(value: float) -> bool:
    """A float's finiteness; JSON integers have no bound, and one past a float's range (about
    1.8e308) is infinite as a float: `math.isfinite` raises OverflowError on it."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def row_schema() -> dict:
    """JSON Schema of one what-if row, so that the OpenAPI document states the whole contract."""
    categorical = {*CATEGORICAL, *TEXT_FEATURES}
    props = {f: {"anyOf": [{"type": "string" if f in categorical else "number"},
                           {"type": "null"}]} for f in model_feature_names()}
    props[ID_FIELD] = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}
    return {"type": "object", "properties": props, "required": model_feature_names(),
            "additionalProperties": False}


def _rows_schema(schema: dict) -> None:
    schema["items"] = row_schema()


class PredictFeaturesRequest(BaseModel):
    """Score feature vectors given in the request ("what if"): every model feature must be
    present (null for unknown); categorical features are strings, and so is recent_notes (the
    newest notes, one per line, each optionally after its UTC time: "2025-10-03T14:05:00Z
    typhoon warning"); the others numbers."""

    model_config = ConfigDict(extra="forbid")

    rows: Annotated[list[dict[str, FeatureValue]], Field(min_length=1, max_length=MAX_ROWS)] = \
        Field(description=f"1 to {MAX_ROWS} rows of {{feature: value}}; an optional "
                          f"'{ID_FIELD}' labels the answer", json_schema_extra=_rows_schema)

    @field_validator("rows")
    @classmethod
    def _complete(cls, rows: list[dict[str, object]]) -> list[dict[str, object]]:
        features = model_feature_names()
        errors = []
        for i, row in enumerate(rows):
            errors += [f"rows[{i}]: {p}" for p in row_problems(row, features)]
            if len(errors) >= 10:
                break
        if errors:
            raise ValueError("; ".join(errors[:10]))
        return rows


class FieldError(BaseModel):
    """One thing wrong with a request, as pydantic reports it: `loc` is the path to the field."""

    type: str = Field(description="kind of problem, e.g. 'missing', 'too_short', 'value_error'")
    loc: list[str | int] = Field(description="where: field names and list positions")
    msg: str = Field(description="what is wrong, naming the field or feature")
    url: str = Field("", description="pydantic's page about this kind of problem")


class InvalidRequest(BaseModel):
    """The 400 answer: the request breaks this contract; `detail` has one entry per problem."""

    error: str = Field(description="how many problems, e.g. '1 validation error for ...'")
    detail: list[FieldError]


class RequestRefused(BaseModel):
    """The answer to a request refused before it is read (401, 408, 413, 415, 429) or that
    could not be answered in time (504)."""

    error: str = Field(description="what went wrong and what to do")


# What the service really answers besides 200 and 400 (`serving.middleware`, BentoML's limits).
REFUSALS = {401: "missing or invalid X-API-Key header",
            408: "request body not received in time (SHIPDELAY_SERVE_BODY_TIMEOUT_S)",
            413: "request body too large (SHIPDELAY_MAX_BODY_BYTES)",
            415: "Content-Type is not application/json",
            429: "too many requests in flight, from this client or in all",
            504: "not answered within the service's timeout"}


class Prediction(BaseModel):
    """The answer for one shipment (or what-if row). Times are ISO-8601 UTC."""

    shipment_id: str
    ok: bool
    error: str | None = Field(None, description=f"why there is no forecast, e.g. '{UNKNOWN}'")
    stale: bool = Field(False, description="no tracking scan for longer than usual on the "
                                           "current mode (see MAX_SCAN_GAP_H)")
    warning: str | None = None
    feature_age_h: float | None = Field(None, description="hours since the last tracking scan")
    p_late: float | None = None
    risk_band: Literal["low", "medium", "high"] | None = None
    delay_p50_h: float | None = None
    delay_p90_h: float | None = None
    eta: AwareDatetime | None = None
    eta_p10: AwareDatetime | None = None
    eta_p90: AwareDatetime | None = None
    reasons: list[str] = Field(default_factory=list)
    reasons_at: AwareDatetime | None = Field(
        None, description="the instant whose features the reasons explain (the shipment's "
                          "state then equals its state now; only the clock has moved on); null "
                          "without reasons")
    model_version: str | None = None
    status: Literal["in_flight", "delivered", "unknown"] | None = Field(
        None, description="in_flight (forecast), delivered (no forecast) or unknown")
    promised_at: AwareDatetime | None = Field(None, description="the promised delivery time")
    delivered_at: AwareDatetime | None = Field(None, description="when a delivered shipment "
                                                                 "was delivered, if known")
    mode: str | None = Field(None, description="the current leg's mode (else the main one)")
    lane: str | None = Field(None, description="the shipment's lane id (origin to destination)")
    current_hub: str | None = Field(None, description="the hub id where the shipment was last "
                                                      "scanned (null before its first scan)")


def failed(shipment_id: str, error: str, model_version: str | None = None) -> Prediction:
    status = {UNKNOWN: "unknown", DELIVERED: "delivered"}.get(error)
    return Prediction(shipment_id=shipment_id, ok=False, error=error, model_version=model_version,
                      status=status)


def _numbers(*columns) -> list[list[float | None]]:
    """Each column as floats, None where missing or not finite (one conversion for all)."""
    x = np.column_stack([as_numbers(c) for c in columns])
    ok = np.isfinite(x)
    return [[v if good else None for v, good in zip(col, fine)]
            for col, fine in zip(x.T.tolist(), ok.T.tolist())]


def _times(*columns) -> list[list[str | None]]:
    """Each column as ISO-8601 UTC text to the microsecond ("...T10:00:00.250000Z"), None where
    missing (one conversion for all). Columns are time zone aware, or numpy datetime64 in UTC
    (`Scorer.score_columns`). Text, not Python datetimes: pydantic parses it into the same
    instants faster than pandas makes datetime objects, and writes the same JSON."""
    stamps = []
    for c in columns:
        if isinstance(c, np.ndarray) and c.dtype.kind == "M":
            stamps.append(c.astype("M8[us]"))
            continue
        t = pd.Series(c)
        if not isinstance(t.dtype, pd.DatetimeTZDtype):
            if t.notna().any():
                raise TypeError("times must be time zone aware")
            t = pd.Series(pd.NaT, index=t.index, dtype="datetime64[ns, UTC]")
        stamps.append(t.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("M8[us]"))
    out = []
    for stamp in stamps:
        text = np.datetime_as_string(stamp, unit="us", timezone="UTC").astype(object)
        text[np.isnat(stamp)] = None
        out.append(text.tolist())
    return out


def stale_mask(age_h: pd.Series, mode: pd.Series | None = None,
               default_h: float = MAX_FEATURE_AGE_H) -> np.ndarray:
    """Rows whose last scan is older than the limit for their current mode (no scan: not stale)."""
    age = as_numbers(age_h)
    if mode is None:
        limit = np.full(len(age), float(default_h))
    else:  # a dictionary lookup a row: a request's rows are few, a batch's modes are four
        limit = np.array([MAX_SCAN_GAP_H.get(m, default_h) if isinstance(m, str) else default_h
                          for m in np.asarray(mode, dtype=object).tolist()], dtype=float)
    return np.nan_to_num(age, nan=-np.inf) > limit


ANSWERS = TypeAdapter(list[Prediction])  # the answers of one request


def predictions(scored: Mapping, vectors: Mapping | None = None,
                default_age_h: float = MAX_FEATURE_AGE_H) -> list[Prediction]:
    """Scorer output (one row per shipment: a frame, or `Scorer.score_columns`' dict) as
    answers, in row order; `vectors` (the scored features, same rows) adds the scan age and the
    staleness flag. Built column by column and validated in one call: a request may carry
    hundreds of shipments."""
    n = len(scored["p_late"])
    if vectors is not None and "hours_since_last_scan" in vectors:
        (ages,) = _numbers(vectors["hours_since_last_scan"])
        stale = stale_mask(vectors["hours_since_last_scan"], vectors.get("current_mode"),
                           default_age_h).tolist()
    else:
        ages, stale = [None] * n, [False] * n
    warnings = [f"no tracking scan for {age:.0f} h, longer than usual on this leg: the "
                "forecast rests on old facts" if is_stale else None
                for age, is_stale in zip(ages, stale)]
    reasons = (list(scored["reasons"]) if "reasons" in scored else [None] * n)
    p_late, d50, d90 = _numbers(scored["p_late"], scored["delay_p50_h"], scored["delay_p90_h"])
    eta, eta_p10, eta_p90 = _times(scored["eta"], scored["eta_p10"], scored["eta_p90"])
    promised = (_times(scored["promised_at"])[0] if "promised_at" in scored else [None] * n)
    reasons_at = (_times(scored["reasons_at"])[0] if "reasons_at" in scored else [None] * n)
    modes = _modes(vectors, n)
    lanes, hubs = (_texts(vectors, c, n) for c in ("lane_id", "current_hub"))
    columns = {
        "shipment_id": np.asarray(scored["shipment_id"]).astype(str).tolist(),
        "stale": stale, "warning": warnings, "feature_age_h": ages,
        "p_late": p_late, "risk_band": np.asarray(scored["risk_band"]).tolist(),
        "delay_p50_h": d50, "delay_p90_h": d90,
        "eta": eta, "eta_p10": eta_p10, "eta_p90": eta_p90,
        "reasons": [list(r) if r is not None else [] for r in reasons], "reasons_at": reasons_at,
        "model_version": np.asarray(scored["model_version"]).astype(str).tolist(),
        "status": ["in_flight"] * n, "promised_at": promised, "mode": modes,
        "lane": lanes, "current_hub": hubs,
    }
    names = list(columns)
    return ANSWERS.validate_python([{"ok": True, **dict(zip(names, values))}
                                     for values in zip(*columns.values())])


def _modes(vectors: Mapping | None, n: int) -> list[str | None]:
    """The current leg's mode of each row, else the shipment's main mode (None: not known)."""
    if vectors is None:
        return [None] * n
    columns = [np.asarray(vectors[c], dtype=object).tolist()
               for c in ("current_mode", "main_mode") if c in vectors]
    out = []
    for values in zip(*columns) if columns else [()] * n:
        out.append(next((v for v in values if isinstance(v, str) and v), None))
    return out


def _texts(vectors: Mapping | None, column: str, n: int) -> list[str | None]:
    """A passed-through text column of the read rows (None where missing or not read: what-if
    rows carry no lane nor hub)."""
    if vectors is None or column not in vectors:
        return [None] * n
    return [v if isinstance(v, str) and v else None
            for v in np.asarray(vectors[column], dtype=object).tolist()]
