"""Fuzz `ingest` with CSV files that mix good tracking events with hostile rows.

Good rows carry unicode text with commas, quotes, tabs and newlines inside quoted cells,
surrounding blanks, times written with `Z`, with an offset or naive (UTC), optional values left
empty, and cells for columns the contract does not know (ignored, whatever they hold). Hostile
rows hold undecodable bytes, NUL or control characters, numbers too large or not finite, times
far in the future or before 1970, a value outside its set, extra fields, a line of junk, and
perhaps a last row with an unterminated quote.

Checked against an expectation built here from the generated rows (not from ingest's output):
ingest never raises; every good row is in the lake exactly once with the values the contract
gives it; every hostile row is in `rejects` with its row number and a reason naming its fault.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipdelay.ingest import ingest
from shipdelay.lake import Lake, open_lake

NOW = pd.Timestamp("2026-06-01T12:00:00", tz="UTC")  # the import's clock
COLUMNS = ["event_id", "shipment_id", "parcel_id", "event_time", "ingested_at", "event_type",
           "hub_id", "leg_index", "latitude", "longitude", "note"]
EVENT_TYPES = ["picked_up", "departed", "arrived", "customs_hold", "delivered"]
C0 = "".join(chr(c) for c in range(32) if chr(c) not in "\t\n\r") + "\x7f"

# text a good row may hold: any unicode but undecodable bytes (surrogates) and C0 controls
good_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=C0),
                    max_size=12)
present_text = good_text.filter(lambda s: s.strip() != "")
instants = st.datetimes(min_value=pd.Timestamp("1970-01-02").to_pydatetime(),
                        max_value=(NOW - pd.Timedelta(days=4)).tz_localize(None).to_pydatetime())


@st.composite
def time_text(draw, t: pd.Timestamp) -> str:
    """`t` (UTC) as ISO-8601 text: with Z, with an offset, or naive (taken as UTC)."""
    form = draw(st.sampled_from(["z", "offset", "naive"]))
    if form == "z":
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if form == "naive":
        return t.strftime("%Y-%m-%d %H:%M:%S.%f")
    minutes = draw(st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15))
    local = t + pd.Timedelta(minutes=minutes)
    sign, m = ("+" if minutes >= 0 else "-"), abs(minutes)
    return local.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{sign}{m // 60:02d}:{m % 60:02d}"


def blanks(draw, text: str) -> str:
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " "]))


@st.composite
def good_row(draw, event_id: str) -> tuple[dict, dict]:
    """(cells as written, the values the lake must hold)."""
    event_time = pd.Timestamp(draw(instants), tz="UTC")
    ingested = event_time + pd.Timedelta(seconds=draw(st.integers(0, 3 * 86_400)),
                                         microseconds=draw(st.integers(0, 999_999)))
    parcel, note = draw(present_text), draw(good_text)
    leg = draw(st.none() | st.integers(0, 31))
    lat = draw(st.none() | st.floats(-90, 90, allow_nan=False))
    lon = draw(st.none() | st.floats(-180, 180, allow_nan=False))
    cells = {"event_id": event_id, "shipment_id": draw(st.sampled_from(["S1", "S2"])),
             "parcel_id": blanks(draw, parcel), "event_time": draw(time_text(event_time)),
             "ingested_at": draw(time_text(ingested)),
             "event_type": draw(st.sampled_from(EVENT_TYPES)),
             "hub_id": draw(st.sampled_from(["P-AAA", "P-BBB"])),
             "leg_index": "" if leg is None else draw(st.sampled_from([f"{leg}", f"{leg}.0"])),
             "latitude": "" if lat is None else repr(lat),
             "longitude": "" if lon is None else blanks(draw, repr(lon)), "note": note}
    expected = cells | {"parcel_id": parcel.strip(), "event_time": event_time,
                        "ingested_at": ingested, "leg_index": leg, "latitude": lat,
                        "longitude": lon, "note": note.strip() or None}
    return cells, expected


HOSTILE = {  # kind -> words its reject reason must hold
    "bytes": "not valid UTF-8", "nul": "NUL", "control": "control character",
    "huge_leg": "leg_index", "not_finite": "not a finite number", "future": "future",
    "before_1970": "before 1970", "bad_type": "event_type", "extra_fields": "fields",
    "junk_line": "fields",
}


@st.composite
def hostile_row(draw, event_id: str) -> tuple[str, dict | bytes]:
    """(kind, cells as written, or a whole raw line); the rest of the row is good."""
    kind = draw(st.sampled_from(sorted(HOSTILE)))
    cells, _ = draw(good_row(event_id))
    text_col = draw(st.sampled_from(["parcel_id", "note"]))
    if kind == "bytes":
        junk = draw(st.binary(max_size=8))
        cells[text_col] = b"x" + junk + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80"]))
    elif kind == "nul":
        cells[text_col] = draw(good_text) + "\x00" + draw(good_text)
    elif kind == "control":
        cells[text_col] = draw(good_text) + draw(st.sampled_from(C0[1:])) + draw(good_text)
    elif kind == "huge_leg":
        cells["leg_index"] = draw(st.sampled_from(["1e30", "99999999999999999999999",
                                                  "-1e20", str(2**53), "32", "-1"]))
    elif kind == "not_finite":
        cells[draw(st.sampled_from(["latitude", "longitude"]))] = draw(st.sampled_from(
            ["inf", "-inf", "nan", "Infinity", "-Infinity", "NaN"]))
    elif kind == "future":
        year = draw(st.integers(2200, 9999))
        cells["event_time"] = f"{year}-01-01T00:00:00Z"
        cells["ingested_at"] = f"{year}-01-01T00:10:00Z"
    elif kind == "before_1970":
        cells["event_time"] = f"{draw(st.integers(1000, 1969))}-06-01T00:00:00Z"
    elif kind == "bad_type":
        cells["event_type"] = draw(st.sampled_from(["teleported", "DEPARTED", "arrived!"]))
    elif kind == "extra_fields":
        cells["_extra"] = draw(st.lists(good_text, min_size=1, max_size=3))
    elif kind == "junk_line":  # no quote, comma or line break: one field, never blank
        junk = draw(st.binary(max_size=30)).translate(None, b'",\r\n')
        return kind, b"\xfe" + junk
    return kind, cells


def _field(value: str | bytes, quote: bool) -> bytes:
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if quote or any(c in data for c in b'",\r\n'):
        return b'"' + data.replace(b'"', b'""') + b'"'
    return data


@st.composite
def delivery(draw):
    """(CSV bytes, good expectations by event id, hostile kinds by row number)."""
    extra_cols = draw(st.lists(st.sampled_from(["carrier_mood", "temp", "x y"]), unique=True,
                               max_size=2))
    header = draw(st.permutations(COLUMNS + extra_cols))
    n = draw(st.integers(1, 25))
    good, hostile, lines = {}, {}, []
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    for row in range(1, n + 1):
        event_id = f"E{row:03d}"
        if draw(st.booleans()):
            cells, expected = draw(good_row(event_id))
            good[event_id] = expected
        else:
            kind, cells = draw(hostile_row(event_id))
            hostile[row] = kind
            if isinstance(cells, bytes):
                lines.append(cells)
                continue
        values = [cells[c] if c in COLUMNS else draw(good_text | st.binary(max_size=6))
                  for c in header] + cells.get("_extra", [])
        lines.append(b",".join(_field(v, draw(st.booleans())) for v in values))
    if draw(st.booleans()):  # a last row whose quote never closes
        hostile[n + 1] = "unterminated"
        lines.append(b'E999,S1,"never closed' + eol + b"E998,S1")
    head = b",".join(_field(blanks(draw, c), False) for c in header)
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    return bom + eol.join([head, *lines]) + eol, good, hostile


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A lake that knows hubs P-AAA, P-BBB and shipments S1, S2, copied for each example."""
    root = tmp_path_factory.mktemp("fuzz")
    lake = open_lake(root / "lake")
    hubs = root / "hubs.csv"
    hubs.write_text("hub_id,name,kind,city,country,region,latitude,longitude\n"
                    "P-AAA,A,seaport,A,NL,europe,51.9,4.1\nP-BBB,B,airport,B,CN,east_asia,31,121\n")
    ships = root / "ships.csv"
    ships.write_text("shipment_id,customer_id,origin_hub,destination_hub,service_level,"
                     "weight_kg,volume_m3,parcel_count,booked_at,promised_at\n"
                     "S1,C,P-AAA,P-BBB,standard,1,1,1,1970-01-01T12:00:00Z,2026-01-01T00:00:00Z\n"
                     "S2,C,P-BBB,P-AAA,express,2,1,1,1970-01-01T12:00:00Z,2026-01-01T00:00:00Z\n")
    assert ingest(hubs, "hubs", lake, now=NOW).accepted == 2
    assert ingest(ships, "shipments", lake, now=NOW).accepted == 2
    return root


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=delivery())
def test_ingest_keeps_every_good_row_once_and_rejects_every_hostile_one(template, case):
    content, good, hostile = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(template, tmp / "w", symlinks=True)
        lake = Lake(tmp / "w" / "lake")
        path = tmp / "events.csv"
        path.write_bytes(content)
        report = ingest(path, "events", lake, now=NOW)  # never raises
        assert (report.accepted, report.rejected) == (len(good), len(hostile)), report

        got = (lake.read("tracking_events").set_index("event_id").sort_index()
               if lake.exists("tracking_events") else pd.DataFrame())
        assert sorted(got.index) == sorted(good)  # each good row, once
        for event_id, want in good.items():
            row = got.loc[event_id]
            for column in COLUMNS[1:]:
                value = row[column]
                if want[column] is None:
                    assert pd.isna(value), (event_id, column, value)
                else:
                    assert value == want[column], (event_id, column, value, want[column])

        rejects = lake.read("rejects") if lake.exists("rejects") else pd.DataFrame(
            {"source": [], "row_number": [], "reason": []})
        mine = rejects[rejects["source"] == "events.csv"].set_index("row_number")["reason"]
        assert sorted(mine.index) == sorted(hostile)  # each hostile row, once, by number
        for row, kind in hostile.items():
            words = "unterminated quote" if kind == "unterminated" else HOSTILE[kind]
            assert words in mine[row], (row, kind, mine[row])
