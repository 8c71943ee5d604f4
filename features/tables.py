"""Lake -> offline feature tables (shipment profile; lane, carrier, customer, hub statistics;
hub weather).

Pure functions, frames in and frames out (pandas frames, Arrow tables or Arrow datasets in; pandas
frames out), plus `build_tables`, which reads a Lake. Every output has the entity key, the
availability time `event_timestamp` and exactly the columns of its `features.schema` dict.

Point in time (docs/design.md, principle 3). A value counts from the moment it could have been known: an
outcome from `delivered_at`, a tracking scan from its `ingested_at`. A window value stamped `t`
uses only what became known in `[t - window, t)`. A milestone (one shipment's departure from a
leg, say) is scanned once per parcel and scans arrive out of order, so its time is "the earliest
scan time ingested so far": the value it contributes at `t` is the minimum `event_time` among
its scans ingested before `t`, and it belongs to the window in which its first scan was ingested.
Those values change while a milestone is inside a window, so the departure slips and dwell times
are summed with exact integer-microsecond difference markers ("+delta from t1, -delta from t2")
and one cumulative sum, rather than with a fixed window frame.

Times are handled at microsecond resolution (the lake's); inside SQL every time is a BIGINT of
epoch microseconds, so no session time zone can shift a day boundary.
"""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from features.local_time import CALENDAR, local_calendar, zones_of
from features.schema import (
    CARRIER_STATS,
    CUSTOMER_STATS,
    ENTITY_KEYS,
    HUB_STATS,
    HUB_WEATHER,
    LANE_STATS,
    SHIPMENT_PROFILE,
    TIMESTAMP,
    WINDOW_DAYS,
)
from features.transforms import BIT_BASE, BIT_PER_LEG, MAX_BIT_LEGS
from shipdelay import contract
from shipdelay.contract import EVENT_TYPES, MODES, STR
from shipdelay.lake import Lake
from shipdelay.memory import DUCKDB_SHARE, offline_connection

Frame = pd.DataFrame | pa.Table | ds.Dataset
DayLike = date | datetime | pd.Timestamp | str

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
EARTH_KM = 6371.0  # as shipdelay.world.network.great_circle_km
HUB_WINDOW_H = 24
SLIP_WINDOW_D = 7
STATS_DAYS_PER_PASS = 31  # daily statistics computed a month of days at a time
# of the memory budget for the hourly hub statistics' DuckDB: at half, a 1M-shipment year's
# build peaked at 6.06 GiB there (DuckDB holding its whole limit); at a quarter, 4.66 GiB, the
# same table, 2 s slower; at 0.15 it ran out of memory (hub_stats falls back to the usual share)
HUB_STATS_SHARE = 0.25
STATS = {"lane": LANE_STATS, "carrier": CARRIER_STATS, "customer": CUSTOMER_STATS}

# What each function reads, cast to one SQL type whatever the input (empty frames included).
_T = "TIMESTAMPTZ"
_COLUMNS = {
    "shipments": {"shipment_id": "VARCHAR", "customer_id": "VARCHAR", "origin_hub": "VARCHAR",
                  "destination_hub": "VARCHAR", "service_level": "VARCHAR",
                  "weight_kg": "DOUBLE", "volume_m3": "DOUBLE", "parcel_count": "BIGINT",
                  "booked_at": _T, "promised_at": _T},
    "legs": {"shipment_id": "VARCHAR", "leg_index": "BIGINT", "mode": "VARCHAR",
             "carrier_id": "VARCHAR", "from_hub": "VARCHAR", "to_hub": "VARCHAR",
             "planned_departure": _T, "planned_arrival": _T, "feeds_leg": "BIGINT"},
    "milestone_plans": {"shipment_id": "VARCHAR", "event_type": "VARCHAR",
                        "leg_index": "BIGINT", "planned_at": _T},
    "hubs": {"hub_id": "VARCHAR", "country": "VARCHAR", "region": "VARCHAR",
             "latitude": "DOUBLE", "longitude": "DOUBLE", "timezone": "VARCHAR"},
    "events": {"event_id": "VARCHAR", "shipment_id": "VARCHAR", "event_type": "VARCHAR",
               "leg_index": "BIGINT", "hub_id": "VARCHAR", "event_time": _T,
               "ingested_at": _T, "note": "VARCHAR"},
    "outcomes": {"shipment_id": "VARCHAR", "delivered_at": _T, "delay_hours": "DOUBLE",
                 "is_late": "BOOLEAN"},
    "weather": {"hub_id": "VARCHAR", "observed_at": _T, "ingested_at": _T,
                **{c: "DOUBLE" for c in contract.columns("hub_weather")[3:]}},
}


# -- plumbing -------------------------------------------------------------------------------------
def _connect(share: float = DUCKDB_SHARE, **frames: Frame) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB with one typed view per input (times as epoch microseconds),
    within `share` of the memory budget (`shipdelay.memory`); an optional column the input lacks
    (data written before the contract had it) is NULL."""
    con = offline_connection(share=share)
    con.execute("SET TimeZone = 'UTC'")  # naive input times are UTC
    for name, frame in frames.items():
        cols = _COLUMNS[name] if name in _COLUMNS else {c: None for c in _names(frame)}
        there = set(_names(frame))
        if isinstance(frame, pd.DataFrame):
            frame = frame[[c for c in cols if c in there]]  # never sniff unused (list) columns
        con.register(f"{name}_in", frame)
        select = ", ".join(
            f'CAST(NULL AS {t}) AS "{c}"' if c not in there else
            f'"{c}"' if t is None else
            f'epoch_us(CAST("{c}" AS {t})) AS "{c}"' if t == _T else f'CAST("{c}" AS {t}) AS "{c}"'
            for c, t in cols.items())
        con.execute(f"CREATE VIEW {name} AS SELECT {select} FROM {name}_in")
    return con


def _names(frame: Frame) -> list[str]:
    return list(frame.columns) if isinstance(frame, pd.DataFrame) else frame.schema.names


def _us(value: DayLike) -> int:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1000)


def _day(value: DayLike) -> int:
    """Days since the epoch of the UTC day containing `value`."""
    return _us(value) // DAY_US


def _midnight(value: DayLike) -> pd.Timestamp:
    return pd.Timestamp(_day(value) * DAY_US, unit="us", tz="UTC")


def _finish(con: duckdb.DuckDBPyConnection, sql: str, key: str, schema: dict[str, str],
            params: list | None = None) -> pd.DataFrame:
    """Run `sql` (columns: key, ts_us, the schema's columns) into a frame of the schema's dtypes.

    The last step of every table: it closes the connection.
    """
    table = con.sql(sql, params=params).to_arrow_table()
    con.close()
    return _frame(table, key, schema)


def _frame(table: pa.Table, key: str, schema: dict[str, str]) -> pd.DataFrame:
    """A result (key, ts_us, the schema's columns) as a frame of the schema's dtypes."""
    out = {key: pd.array(table.column(key).to_pandas(), dtype=STR),
           TIMESTAMP: pd.to_datetime(table.column("ts_us").to_numpy(), unit="us", utc=True)
           .astype("datetime64[ns, UTC]")}
    for col, kind in schema.items():
        values = table.column(col)
        if kind.endswith("_list"):  # Arrow lists: a million shipments' plans as Python
            # lists were ~1.5 GB of objects; each element still reads as a list
            item = pa.float64() if kind == "float_list" else pa.string()
            out[col] = pd.arrays.ArrowExtensionArray(  # one chunk: DuckDB's hundreds made
                pa.chunked_array([values.cast(pa.list_(item)).combine_chunks()]))  # takes slow
        elif kind == "str":
            out[col] = pd.array(values.to_pandas(), dtype=STR)
        elif kind == "int":
            out[col] = values.to_numpy(zero_copy_only=False).astype("int64")
        else:
            out[col] = values.to_numpy(zero_copy_only=False).astype("float64")
    return pd.DataFrame(out)


def _cumulative(con: duckdb.DuckDBPyConnection, markers: str, group: str,
                value_cols: list[str], name: str) -> None:
    """Register `name`: running sums of difference markers `(group, t, values...)` per (group, t).

    Exact int64 arithmetic (values are counts and microsecond differences of hours' scale);
    the running sum is a vectorized pandas cumsum, several times faster than a DuckDB window.
    """
    sums = ", ".join(f"sum({c})::BIGINT AS {c}" for c in value_cols)
    frame = con.sql(f"SELECT {group}, t, {sums} FROM ({markers}) GROUP BY ALL "
                    f"ORDER BY {group}, t").df()
    frame[value_cols] = frame.groupby(group, sort=False)[value_cols].cumsum()
    con.register(name, frame)


def _versions(source: str, key: str, bucket_us: int) -> str:
    """The value history of each milestone in `source` (one row per scan: key columns, et, ing).

    One row per change of "earliest scan time ingested so far": `b` is the ingestion bucket of
    the change, `b0` the milestone's first ingestion bucket, `vmin` the new earliest time and
    `delta` its change (rn = 1: the first value itself); `v0` is the first value.
    """
    return f"""
        SELECT * EXCLUDE (prev), vmin - coalesce(prev, 0) AS delta FROM (
            SELECT *, lag(vmin) OVER (PARTITION BY {key} ORDER BY rn) AS prev FROM (
                SELECT *, ing // {bucket_us} AS b,
                       min(et) OVER w AS vmin, row_number() OVER w AS rn,
                       first_value(ing // {bucket_us}) OVER w AS b0,
                       first_value(et) OVER w AS v0
                FROM ({source}) WINDOW w AS (PARTITION BY {key} ORDER BY ing, event_id
                                             ROWS UNBOUNDED PRECEDING)))
        WHERE rn = 1 OR vmin < prev"""


# -- 1. shipment profile ------------------------------------------------------------------------
# A planned step's milestone bit (features.transforms.milestone_bit, legs clamped to 0..7).
_STEP_BIT_SQL = "CASE m.event_type " + " ".join(
    f"WHEN '{t}' THEN {base} + {per} * least(coalesce(m.leg_index, 0), {MAX_BIT_LEGS - 1})"
    for t, base, per in zip(EVENT_TYPES, BIT_BASE, BIT_PER_LEG, strict=True)) + " END"

def shipment_profile(shipments: Frame, legs: Frame, hubs: Frame,
                     milestone_plans: Frame | None = None) -> pd.DataFrame:
    """One row per shipment, available at booking: lane, main carrier/mode, shares, the plan.

    An attribute the lake lacks gives a missing feature, never an invented one: the distance
    when a leg's hub has no coordinates, `international` when a country is missing, a region,
    the carrier of the longest leg, the customer, service level, weight or volume when they
    are. The booking's weekday, month and hour are on the origin hub's clock
    (`features.local_time`; UTC when its time zone is unknown).

    The plan beside the lists by ord: `plan_feeds`, the leg each leg's cargo continues on (-1:
    the end; a consolidation has legs feeding one leg), and `plan_steps`, (milestone bit,
    planned time) pairs of the planned handling steps of `milestone_plans` (a step of a leg
    the plan does not have is left out)."""
    if milestone_plans is None:
        milestone_plans = contract.validate("milestone_plans", pd.DataFrame(
            {c: [] for c in contract.columns("milestone_plans")}))
    con = _connect(shipments=shipments, legs=legs, hubs=hubs, milestone_plans=milestone_plans)
    zone_by_hub = con.sql("SELECT hub_id, timezone FROM hubs").df().set_index("hub_id")["timezone"]
    shares = ", ".join(f"coalesce(p.dur_{m}, 0) / p.dur AS share_{m}" for m in MODES)
    mode_sums = ", ".join(f"sum(dur) FILTER (WHERE mode = '{m}') AS dur_{m}" for m in MODES)
    sql = f"""
    WITH hub AS (SELECT hub_id, country, region, radians(latitude) AS lat,
                        radians(longitude) AS lon FROM hubs),
    hav AS (  -- haversine term; NULL for an unknown hub (least() would skip a NULL)
        SELECT l.*, l.planned_arrival - l.planned_departure AS dur,
               pow(sin((t.lat - f.lat) / 2), 2)
                   + cos(f.lat) * cos(t.lat) * pow(sin((t.lon - f.lon) / 2), 2) AS a
        FROM legs l LEFT JOIN hub f ON f.hub_id = l.from_hub
        LEFT JOIN hub t ON t.hub_id = l.to_hub),
    leg AS (SELECT *, 2 * {EARTH_KM} * asin(sqrt(CASE WHEN a > 1 THEN 1.0 ELSE a END)) AS km,
                   count(*) OVER (PARTITION BY shipment_id) AS legs_of
            FROM hav),
    steps AS (
        SELECT m.shipment_id, flatten(list([{_STEP_BIT_SQL}, m.planned_at / 1e6]
                                           ORDER BY {_STEP_BIT_SQL})) AS pairs
        FROM milestone_plans m
        WHERE m.leg_index IS NULL OR m.leg_index < (
            SELECT count(*) FROM legs l WHERE l.shipment_id = m.shipment_id)
        GROUP BY m.shipment_id),
    plan AS (
        SELECT shipment_id, count(*) AS n_legs, sum(dur)::DOUBLE AS dur, {mode_sums},
               CASE WHEN count(km) = count(*) THEN sum(km) END AS km,
               first(carrier_id ORDER BY dur DESC, leg_index) AS carrier_id,
               first(mode ORDER BY dur DESC, leg_index) AS main_mode,
               min_by(planned_departure, leg_index) AS first_dep,
               min_by(from_hub, leg_index) AS first_hub, min_by(mode, leg_index) AS first_mode,
               max_by(planned_arrival, leg_index) AS last_arr,
               max_by(to_hub, leg_index) AS last_hub, max_by(mode, leg_index) AS last_mode,
               flatten(list([planned_departure / 1e6, planned_arrival / 1e6] ORDER BY leg_index))
                   AS mid_times,
               flatten(list([from_hub, to_hub] ORDER BY leg_index)) AS mid_hubs,
               flatten(list([mode, mode] ORDER BY leg_index)) AS mid_modes,
               list(coalesce(feeds_leg, CASE WHEN leg_index + 1 < legs_of THEN leg_index + 1
                                             ELSE -1 END)::DOUBLE ORDER BY leg_index) AS feeds
        FROM leg GROUP BY shipment_id)
    SELECT s.shipment_id, s.booked_at AS ts_us,
        s.origin_hub || '>' || s.destination_hub AS lane_id, s.customer_id, p.carrier_id,
        s.origin_hub, s.destination_hub,
        o.region AS origin_region, d.region AS destination_region,
        s.service_level, coalesce(p.main_mode, 'unknown') AS main_mode,
        coalesce(p.n_legs, 0) AS n_legs, {shares}, p.km AS distance_km,
        (p.last_arr - s.booked_at) / {HOUR_US}::DOUBLE AS planned_transit_h,
        s.weight_kg, s.volume_m3, s.parcel_count,
        (s.promised_at - p.last_arr) / {HOUR_US}::DOUBLE AS promised_slack_h,
        (o.country <> d.country)::DOUBLE AS international,
        0 AS booked_weekday, 0 AS booked_month, 0 AS booked_hour,  -- local time: below
        s.booked_at / 1e6 AS booked_at_s, s.promised_at / 1e6 AS promised_at_s,
        p.last_arr / 1e6 AS planned_arrival_s,
        list_transform([p.first_dep / 1e6] || coalesce(p.mid_times, []::DOUBLE[])
                           || [p.last_arr / 1e6, s.promised_at / 1e6],
                       lambda x: coalesce(x, 'NaN'::DOUBLE)) AS plan_times_s,
        [coalesce(p.first_hub, s.origin_hub)] || coalesce(p.mid_hubs, []::VARCHAR[])
            || [coalesce(p.last_hub, s.destination_hub), coalesce(p.last_hub, s.destination_hub)]
            AS plan_hubs,
        [coalesce(p.first_mode, 'unknown')] || coalesce(p.mid_modes, []::VARCHAR[])
            || [coalesce(p.last_mode, 'unknown'), coalesce(p.last_mode, 'unknown')] AS plan_modes,
        coalesce(p.feeds, []::DOUBLE[]) AS plan_feeds,
        coalesce(st.pairs, []::DOUBLE[]) AS plan_steps
    FROM shipments s LEFT JOIN plan p USING (shipment_id)
    LEFT JOIN steps st USING (shipment_id)
    LEFT JOIN hub o ON o.hub_id = s.origin_hub LEFT JOIN hub d ON d.hub_id = s.destination_hub
    ORDER BY s.shipment_id"""
    profile = _finish(con, sql, "shipment_id", SHIPMENT_PROFILE)
    booked_us = profile[TIMESTAMP].to_numpy(dtype="datetime64[us]").astype("int64")
    local = local_calendar(booked_us, zones_of(profile["origin_hub"].to_numpy(object),
                                               zone_by_hub))
    for name in CALENDAR:
        profile[name] = local[name]
    return profile


# -- 2. lane / carrier / customer rolling statistics ----------------------------------------------
def rolling_stats(entity: str, outcomes: Frame, profile: Frame, start_day: DayLike,
                  end_day: DayLike, *, events: Frame | None = None,
                  legs: Frame | None = None) -> pd.DataFrame:
    """Daily rows (00:00 UTC, `start_day`..`end_day`) of one entity's delivery statistics.

    Dense from the day an entity is known: an entity of `profile` has a row at every midnight
    after its first booking (before it, the lake of that day did not know it, so there is no
    row and the value is missing). Outcomes count from `delivered_at`; lane and carrier also get
    the 7-day departure slip, which needs `events` and `legs`.
    """
    if entity not in STATS:
        raise ValueError(f"entity must be one of {', '.join(STATS)}, not {entity!r}")
    key, schema = ENTITY_KEYS[entity], STATS[entity]
    slip_col = f"{entity}_dep_slip_7d"
    if slip_col in schema and (events is None or legs is None):
        raise ValueError(f"{entity} statistics need `events` and `legs` for {slip_col}")
    d0, d1 = _day(start_day), _day(end_day)
    frames = {"outcomes": outcomes, "profile": _keys_of(profile, key)}
    if slip_col in schema:
        frames |= {"events": events, "legs": legs}
    con = _connect(**frames)
    con.execute(f"CREATE TEMP TABLE ent AS SELECT {key} AS k, min(epoch_us({TIMESTAMP})) AS first "
                f"FROM profile WHERE {key} IS NOT NULL GROUP BY {key}")
    con.execute(f"CREATE TEMP TABLE who AS SELECT DISTINCT shipment_id, {key} AS k FROM profile "
                f"WHERE {key} IS NOT NULL")

    wmax = max(WINDOW_DAYS)
    aggs, picks = [], []
    for w in WINDOW_DAYS:
        f = f"FILTER (WHERE age <= {w})"
        aggs += [f"count(*) {f} AS v{w}", f"avg(late) {f} AS lr{w}", f"avg(delay) {f} AS md{w}",
                 f"quantile_cont(delay, 0.9) {f} AS p{w}"]
        picks += [f"coalesce(a.v{w}, 0) AS {entity}_volume_{w}d",
                  f"a.lr{w} AS {entity}_late_rate_{w}d", f"a.md{w} AS {entity}_mean_delay_{w}d",
                  f"a.p{w} AS {entity}_p90_delay_{w}d"]
    slip_join, slip_pick = "", ""
    if slip_col in schema:
        con.execute(f"CREATE TEMP TABLE dv AS {_dep_versions()}")
        _cumulative(con, _DEP_SLIP_MARKERS, "k", ["n", "s"], "slip")
        slip_join = "ASOF LEFT JOIN slip c ON c.k = g.k AND g.d >= c.t"
        slip_pick = (f", CASE WHEN c.n > 0 THEN c.s::DOUBLE / c.n / {HOUR_US} END "
                     f"AS {slip_col}")
    con.execute(f"""CREATE TEMP TABLE oc AS
        SELECT w.k, o.delivered_at // {DAY_US} AS day, o.delay_hours AS delay,
               o.is_late::DOUBLE AS late
        FROM outcomes o JOIN who w USING (shipment_id)""")
    # a range of days at a time: each pass holds its days' window rows only (a year of a
    # 1M-shipment lake at once, 28M rows of quantiles that DuckDB cannot spill, went past the
    # memory budget), and every (entity, day) is computed whole within one pass
    parts = []
    for lo in range(d0, d1 + 1, STATS_DAYS_PER_PASS) or [d0]:  # one empty pass: the columns
        hi = min(d1, lo + STATS_DAYS_PER_PASS - 1)
        parts.append(con.sql(f"""
        WITH x AS (SELECT k, day + age AS d, age, delay, late FROM oc, range(1, {wmax + 1}) r(age)
                   WHERE day BETWEEN {lo - wmax} AND {hi - 1} AND day + age BETWEEN {lo} AND {hi}),
        a AS (SELECT k, d, {", ".join(aggs)} FROM x GROUP BY k, d),
        g AS (SELECT k, d FROM ent, range({lo}, {hi + 1}) r(d) WHERE d * {DAY_US} > first)
        SELECT g.k AS {key}, g.d * {DAY_US} AS ts_us, {", ".join(picks)}{slip_pick}
        FROM g LEFT JOIN a ON a.k = g.k AND a.d = g.d {slip_join}""").to_arrow_table())
    con.close()
    table = pa.concat_tables(parts).sort_by([(key, "ascending"), ("ts_us", "ascending")])
    return _frame(table, key, schema)


def _keys_of(profile: Frame, key: str) -> Frame:
    if isinstance(profile, pd.DataFrame):
        return profile[["shipment_id", key, TIMESTAMP]]
    if isinstance(profile, pa.Table):
        return profile.select(["shipment_id", key, TIMESTAMP])
    return profile


def _dep_versions() -> str:
    """Value history of each departure (shipment, leg), by ingestion day, with its entity k."""
    scans = """
        SELECT e.shipment_id, e.leg_index, e.event_id, e.event_time AS et, e.ingested_at AS ing,
               l.planned_departure AS planned, w.k
        FROM events e JOIN legs l ON l.shipment_id = e.shipment_id AND l.leg_index = e.leg_index
        JOIN who w ON w.shipment_id = e.shipment_id
        WHERE e.event_type = 'departed'"""
    return _versions(scans, "shipment_id, leg_index", DAY_US)


# Daily difference markers (k, t, n, s) of the departures' slip: a departure counts on the days
# after its first ingestion day; each improvement of its earliest scan time from the day after
# it was ingested.
_SLIP = "CASE WHEN rn = 1 THEN vmin - planned ELSE delta END"
_DEP_SLIP_MARKERS = f"""
    SELECT k, b0 + 1 AS t, 1 AS n, 0::BIGINT AS s FROM dv WHERE rn = 1
    UNION ALL SELECT k, b0 + {SLIP_WINDOW_D + 1}, -1, 0 FROM dv WHERE rn = 1
    UNION ALL SELECT k, b + 1, 0, {_SLIP} FROM dv WHERE b < b0 + {SLIP_WINDOW_D}
    UNION ALL SELECT k, b0 + {SLIP_WINDOW_D + 1}, 0, -{_SLIP} FROM dv
        WHERE b < b0 + {SLIP_WINDOW_D}"""


# -- 3. hub statistics ----------------------------------------------------------------------------
def hub_stats(events: Frame, legs: Frame, start: DayLike, end: DayLike,
              known: Frame | None = None) -> pd.DataFrame:
    """Hourly rows (every hour end t in [start, end]) of each hub's last 24 hours of scans.

    A hub has rows from the first hour end after its first scan was ingested (before it, the
    lake of that hour did not know it: no row, the values are missing). `known` (hub_id,
    first_seen) gives those first ingestion times when `events` holds only part of the lake
    (`features.roll`); by default they come from `events`.

    DuckDB fills whatever limit it is given with these temporary tables, so they run within
    `HUB_STATS_SHARE` of the memory budget (spilling the rest), and again within the usual
    share when that is too little for the lake's events.
    """
    try:
        return _hub_stats(events, legs, start, end, known, HUB_STATS_SHARE)
    except duckdb.OutOfMemoryException:
        return _hub_stats(events, legs, start, end, known, DUCKDB_SHARE)


def _hub_stats(events: Frame, legs: Frame, start: DayLike, end: DayLike, known: Frame | None,
               share: float) -> pd.DataFrame:
    con = _connect(share, events=events, legs=legs)
    try:
        return _hub_stats_sql(con, start, end, known)
    except BaseException:
        con.close()
        raise


def _hub_stats_sql(con: duckdb.DuckDBPyConnection, start: DayLike, end: DayLike,
                   known: Frame | None) -> pd.DataFrame:
    h0 = -(-_us(start) // HOUR_US)  # first whole hour at or after start
    h1 = _us(end) // HOUR_US
    L = HUB_WINDOW_H
    if known is None:
        con.execute("CREATE TEMP TABLE hubs AS SELECT hub_id, min(ingested_at) AS first "
                    "FROM events WHERE hub_id IS NOT NULL GROUP BY hub_id")
    else:
        con.register("known_in", known)
        con.execute("CREATE TEMP TABLE hubs AS SELECT CAST(hub_id AS VARCHAR) AS hub_id, "
                    "epoch_us(CAST(first_seen AS TIMESTAMPTZ)) AS first FROM known_in")
    # Only scans ingested before the last hour end can count; milestones first ingested more than
    # a window before the first hour end cancel out before it (their markers all precede h0),
    # except arrivals, which a later departure's dwell time needs.
    con.execute(f"""CREATE TEMP TABLE ms AS
        SELECT * FROM ({_versions(f'''SELECT shipment_id, event_type, leg_index, hub_id, event_id,
                                            event_time AS et, ingested_at AS ing
                                     FROM events WHERE ingested_at < {h1 * HOUR_US}''',
                                  'shipment_id, event_type, leg_index, hub_id', HOUR_US)})
        WHERE b0 >= {h0 - L - 1} OR event_type = 'arrived'""")
    counted = {"departed": "dep", "arrived": "arr", "exception": "exc", "customs_hold": "hold"}
    cols = ["dep", "arr", "exc", "hold", "notes", "slip_n", "slip_s", "dwell_n", "dwell_s"]

    def marks(values: dict[str, str], frm: str, start_t: str, end_t: str, where: str = "") -> str:
        """+value from start_t, -value from end_t (one pass: each row times the signs +1, -1)."""
        vals = ", ".join(f"sg.s * ({values[c]}) AS {c}" if c in values else f"0 AS {c}"
                         for c in cols)
        cond = f"WHERE {start_t} < {end_t}" + (f" AND ({where})" if where else "")
        return (f"SELECT hub_id, CASE WHEN sg.s = 1 THEN {start_t} ELSE {end_t} END AS t, "
                f"{vals} FROM {frm}, (VALUES (1), (-1)) sg(s) {cond}")

    end_t = f"b0 + {L + 1}"
    types = ", ".join(f"'{t}'" for t in counted)
    parts = [marks({c: f"(event_type = '{t}')::INT" for t, c in counted.items()}, "ms",
                   "b0 + 1", end_t, f"rn = 1 AND event_type IN ({types})")]
    # every note written at the hub counts, whatever its words: what notes mean is learned per
    # shipment by the model's note model, a busy hub writes more of them whatever the language
    notes = (f"(SELECT hub_id, ingested_at // {HOUR_US} AS b0 FROM events "
             f"WHERE note IS NOT NULL AND trim(note) <> '' AND ingested_at < {h1 * HOUR_US} "
             f"AND ingested_at >= {(h0 - L - 1) * HOUR_US})")
    parts += [marks({"notes": "1"}, notes, "b0 + 1", end_t)]
    # slip: the first value minus the plan, then each improvement of the earliest scan time
    con.execute("CREATE TEMP TABLE dep AS SELECT m.*, l.planned_departure AS planned FROM ms m "
                "JOIN legs l USING (shipment_id, leg_index) WHERE m.event_type = 'departed'")
    parts += [marks({"slip_n": "(rn = 1)::INT", "slip_s": _SLIP}, "dep", "b + 1", end_t)]
    # dwell: departure (leg i >= 1) minus the arrival of leg i - 1 at the same hub, defined
    # once both are known; each side's value changes count from their own ingestion. Values
    # are taken relative to the departure's first scan time, so sums stay small integers.
    con.execute("""CREATE TEMP TABLE pair AS
        SELECT d.hub_id, d.b0, d.b AS db, d.rn AS drn, d.delta AS dd,
               a.b AS ab, a.rn AS arn, CASE WHEN a.rn = 1 THEN a.vmin - d.v0 ELSE a.delta END AS ad,
               a0.b AS a0
        FROM ms d JOIN ms a0 ON a0.shipment_id = d.shipment_id AND a0.rn = 1
             AND a0.event_type = 'arrived' AND a0.leg_index = d.leg_index - 1
             AND a0.hub_id = d.hub_id
        JOIN ms a ON a.shipment_id = d.shipment_id AND a.event_type = 'arrived'
             AND a.leg_index = d.leg_index - 1 AND a.hub_id = d.hub_id
        WHERE d.event_type = 'departed' AND d.leg_index >= 1""")
    parts += [marks({"dwell_n": "1"}, "pair", "greatest(b0, a0) + 1", end_t,
                    "drn = 1 AND arn = 1"),
              marks({"dwell_s": "dd"}, "pair", "greatest(db, a0) + 1", end_t,
                    "arn = 1 AND drn > 1"),
              marks({"dwell_s": "-ad"}, "pair", "greatest(ab, b0) + 1", end_t, "drn = 1")]
    con.execute(f"CREATE TEMP TABLE marks AS {' UNION ALL '.join(parts)}")
    _cumulative(con, "SELECT * FROM marks", "hub_id", cols, "cum")
    mean = "CASE WHEN c.{0}_n > 0 THEN c.{0}_s::DOUBLE / c.{0}_n / {1} END AS hub_{2}_24h"
    sql = f"""
    SELECT g.hub_id, g.t * {HOUR_US} AS ts_us,
        coalesce(c.dep, 0) AS hub_departures_24h, coalesce(c.arr, 0) AS hub_arrivals_24h,
        {mean.format('slip', HOUR_US, 'dep_slip')}, {mean.format('dwell', HOUR_US, 'dwell')},
        coalesce(c.exc, 0) AS hub_exceptions_24h, coalesce(c.hold, 0) AS hub_customs_holds_24h,
        coalesce(c.notes, 0) AS hub_notes_24h
    FROM (SELECT hub_id, t FROM hubs, range({h0}, {h1 + 1}) r(t) WHERE t * {HOUR_US} > first) g
    ASOF LEFT JOIN cum c ON c.hub_id = g.hub_id AND g.t >= c.t
    ORDER BY g.hub_id, g.t"""
    return _finish(con, sql, "hub_id", HUB_STATS)


# -- 4. hub weather ------------------------------------------------------------------------------
def hub_weather(weather: Frame, start: DayLike | None = None) -> pd.DataFrame:
    """The lake's hub_weather observations as a feature table: at each ingestion moment, the
    newest observation known. An observation that arrives after a newer one was known never
    becomes "the latest"; of several ingested at once the newest counts. With `start`, only
    rows from then on."""
    con = _connect(weather=weather)
    picks = ", ".join(f"{c} AS {name}" for c, name in
                      zip(contract.columns("hub_weather")[3:], HUB_WEATHER, strict=True))
    since = "" if start is None else f"AND ingested_at >= {_us(start)}"
    sql = f"""
    WITH w AS (
        SELECT *, max(observed_at) OVER (PARTITION BY hub_id ORDER BY ingested_at, observed_at
                                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen
        FROM weather)
    SELECT hub_id, ingested_at AS ts_us, {picks} FROM w
    WHERE (seen IS NULL OR observed_at > seen) {since}
    QUALIFY row_number() OVER (PARTITION BY hub_id, ingested_at ORDER BY observed_at DESC) = 1
    ORDER BY hub_id, ts_us"""
    return _finish(con, sql, "hub_id", HUB_WEATHER)


# -- 5. the whole lake ----------------------------------------------------------------------------
def _scan(lake: Lake, table: str) -> Frame:
    if lake.exists(table):
        return lake.scan(table)
    return contract.validate(table, pd.DataFrame({c: [] for c in contract.columns(table)}))


def lake_now(lake: Lake) -> pd.Timestamp | None:
    """The lake's "now": its newest tracking-event ingestion (None without events)."""
    with _connect(events=_scan(lake, "tracking_events")) as con:
        newest = con.execute("SELECT max(ingested_at) FROM events").fetchone()[0]
    return None if newest is None else pd.Timestamp(newest * 1000, tz="UTC")


def build_tables(lake: Lake, since: date | None = None,
                 as_of: DayLike | None = None) -> dict[str, pd.DataFrame]:
    """Every offline feature table of the lake as known at `as_of` (default: the lake's now):
    profile, lane/carrier/customer/hub statistics, hub weather (no rows when the lake has no
    hub_weather table).

    Statistics rows run from the first booking day to the last window that closed at `as_of`
    (daily: its midnight; hubs: its whole hour), weather rows to `as_of`: a window still open
    at `as_of` has no row yet, `features.roll` adds it once it closes. `since` keeps only
    statistics rows on or after that day (windows still look back before it); the profile is
    always whole.
    """
    shipments, legs = _scan(lake, "shipments"), _scan(lake, "legs")
    events, outcomes = _scan(lake, "tracking_events"), _scan(lake, "outcomes")
    profile = shipment_profile(shipments, legs, _scan(lake, "hubs"),
                               _scan(lake, "milestone_plans"))
    tables = {"profile": profile}
    if as_of is None:
        as_of = lake_now(lake)
        if as_of is None:
            as_of = profile[TIMESTAMP].max() if len(profile) else pd.Timestamp.now(tz="UTC")
    end = pd.Timestamp(_us(as_of), unit="us", tz="UTC")
    first = profile[TIMESTAMP].min().floor("D") if len(profile) else _midnight(end)
    start = max(first, _midnight(since)) if since is not None else first
    for entity in STATS:
        tables[f"{entity}_stats"] = rolling_stats(entity, outcomes, profile, start, end,
                                                  events=events, legs=legs)
    tables["hub_stats"] = hub_stats(events, legs, start, end)
    weather = hub_weather(_scan(lake, "hub_weather"), start if since is not None else None)
    tables["hub_weather"] = weather[weather[TIMESTAMP] <= end].reset_index(drop=True)
    return tables


__all__ = ["build_tables", "hub_stats", "hub_weather", "lake_now", "rolling_stats",
           "shipment_profile"]
