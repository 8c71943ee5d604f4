"""`shipdelay ingest` against hostile files: a bad row goes to rejects with its row number and
reason while the good rows import; a file that cannot be read at all is refused in one sentence
that names it (exit 1), with nothing imported; a bad `--map` exits 2 naming `--map`. No input
ends in a traceback."""

from __future__ import annotations

import json
import random
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shipdelay import contract
from shipdelay.cli import app
from shipdelay.lake import Lake

runner = CliRunner()

HUBS = ("hub_id,name,kind,city,country,region,latitude,longitude\n"
        "P-AAA,Port A,seaport,Aville,NL,europe,51.9,4.1\n"
        "P-BBB,Port B,seaport,Bville,CN,east_asia,31.2,121.5\n")
SHIP_HEADER = ("shipment_id,customer_id,origin_hub,destination_hub,service_level,weight_kg,"
               "volume_m3,parcel_count,booked_at,promised_at")
LEG_HEADER = "shipment_id,leg_index,mode,carrier_id,from_hub,to_hub,planned_departure,planned_arrival"
EVENT_HEADER = ("event_id,shipment_id,parcel_id,event_time,ingested_at,event_type,hub_id,"
                "leg_index,latitude,longitude,note")


def ship(i: int, **change: str) -> str:
    values = {"shipment_id": f"S{i}", "customer_id": "C1", "origin_hub": "P-AAA",
              "destination_hub": "P-BBB", "service_level": "standard", "weight_kg": "12.5",
              "volume_m3": "0.4", "parcel_count": "2", "booked_at": "2025-03-01T10:00:00Z",
              "promised_at": "2025-03-20T10:00:00Z"} | change
    return ",".join(values[c] for c in SHIP_HEADER.split(","))


def event(i: int, **change: str) -> str:
    values = {"event_id": f"E{i}", "shipment_id": "S1", "parcel_id": "S1-P01",
              "event_time": "2025-03-02T10:00:00Z", "ingested_at": "2025-03-02T10:09:00Z",
              "event_type": "departed", "hub_id": "P-AAA", "leg_index": "0",
              "latitude": "", "longitude": "", "note": f"note {i}"} | change
    return ",".join(values[c] for c in EVENT_HEADER.split(","))


def cli(*args: str):
    """Run the CLI; a traceback (any exception but SystemExit) fails the test at once."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args, result.output, repr(result.exception))
    assert "Traceback" not in result.output
    return result


def write(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


@pytest.fixture
def lake(tmp_path, data_dir) -> Lake:
    """A lake holding hubs P-AAA, P-BBB and shipments S1, S2 (through the CLI)."""
    assert cli("ingest", write(tmp_path / "hubs.csv", HUBS), "--kind", "hubs").exit_code == 0
    ships = write(tmp_path / "base-shipments.csv", "\n".join([SHIP_HEADER, ship(1), ship(2)]) + "\n")
    assert cli("ingest", ships, "--kind", "shipments").exit_code == 0
    return Lake(data_dir / "lake")


def rejects_of(lake: Lake, source: str) -> pd.Series:
    """reason by row number of one source file's rejects."""
    if not lake.exists("rejects"):
        return pd.Series(dtype=object)
    rejects = lake.read("rejects")
    return rejects[rejects["source"] == source].set_index("row_number")["reason"].sort_index()


def ids(lake: Lake, table: str, key: str) -> list[str]:
    return sorted(lake.read(table, columns=[key])[key]) if lake.exists(table) else []


# -- row-level problems: the row is rejected, the others import --------------------------------

def test_too_large_integer_rejects_its_row_only(tmp_path, lake):
    f = write(tmp_path / "ships.csv", "\n".join(
        [SHIP_HEADER, ship(3), ship(4, parcel_count="99999999999999999999999"), ship(5)]) + "\n")
    result = cli("ingest", f, "--kind", "shipments")
    assert result.exit_code == 0, result.output
    assert ids(lake, "shipments", "shipment_id") == ["S1", "S2", "S3", "S5"]
    reasons = rejects_of(lake, "ships.csv")
    assert list(reasons.index) == [2] and "parcel_count" in reasons[2]
    assert "out of range" in reasons[2]


def test_leg_index_1e30_rejects_its_row_only(tmp_path, lake):
    rows = [LEG_HEADER,
            "S1,0,ocean,K1,P-AAA,P-BBB,2025-03-02T00:00:00Z,2025-03-12T00:00:00Z",
            "S1,1e30,truck,K2,P-BBB,P-AAA,2025-03-13T00:00:00Z,2025-03-14T00:00:00Z",
            "S2,0,air,K3,P-AAA,P-BBB,2025-03-02T00:00:00Z,2025-03-03T00:00:00Z"]
    result = cli("ingest", write(tmp_path / "legs.csv", "\n".join(rows) + "\n"), "--kind", "legs")
    assert result.exit_code == 0, result.output
    legs = lake.read("legs")
    assert sorted(zip(legs["shipment_id"], legs["leg_index"])) == [("S1", 0), ("S2", 0)]
    reasons = rejects_of(lake, "legs.csv")
    assert list(reasons.index) == [2] and "leg_index" in reasons[2]


def test_invalid_utf8_rejects_its_row_only(tmp_path, lake):
    body = "\n".join([EVENT_HEADER, event(1), event(2, note="caf\udcffe"), event(3)]) + "\n"
    f = write(tmp_path / "events.csv", body.encode("utf-8", "surrogateescape"))
    result = cli("ingest", f, "--kind", "events")
    assert result.exit_code == 0, result.output
    assert ids(lake, "tracking_events", "event_id") == ["E1", "E3"]
    reasons = rejects_of(lake, "events.csv")
    assert list(reasons.index) == [2] and "UTF-8" in reasons[2] and "note" in reasons[2]
    raw = lake.read("rejects").set_index("row_number").loc[2, "raw"]
    assert "\\xff" in raw  # the bad byte is shown, not lost


def test_row_with_extra_fields_is_rejected_and_the_rest_import(tmp_path, lake):
    body = "\n".join([EVENT_HEADER, event(1), event(2) + ",surplus,cells", event(3)]) + "\n"
    result = cli("ingest", write(tmp_path / "events.csv", body), "--kind", "events")
    assert result.exit_code == 0, result.output
    assert ids(lake, "tracking_events", "event_id") == ["E1", "E3"]
    reasons = rejects_of(lake, "events.csv")
    assert list(reasons.index) == [2] and "13 fields" in reasons[2] and "11" in reasons[2]


def test_unterminated_quote_imports_the_rows_before_it(tmp_path, lake):
    rows = [EVENT_HEADER, event(1), event(2), event(3, note='"never closed'), event(4), event(5)]
    result = cli("ingest", write(tmp_path / "events.csv", "\n".join(rows) + "\n"),
                 "--kind", "events")
    assert result.exit_code == 0, result.output
    assert ids(lake, "tracking_events", "event_id") == ["E1", "E2"]
    reasons = rejects_of(lake, "events.csv")
    assert list(reasons.index) == [3] and "unterminated quote" in reasons[3]
    assert "E4" in lake.read("rejects").set_index("row_number").loc[3, "raw"]  # kept, not lost


def test_unterminated_quote_with_the_right_field_count_is_not_swallowed(tmp_path, lake):
    # a quote opened in the last column swallows the later rows into one cell that still gives
    # the header's field count: a lenient parser takes it as one good row
    rows = [EVENT_HEADER, event(1), event(2, note='"oops'), event(3)]
    result = cli("ingest", write(tmp_path / "events.csv", "\n".join(rows) + "\n"),
                 "--kind", "events")
    assert ids(lake, "tracking_events", "event_id") == ["E1"]
    assert "unterminated quote" in rejects_of(lake, "events.csv")[2]
    assert result.exit_code == 0


def test_infinite_weight_and_volume_break_the_contract(tmp_path, lake):
    frame = pd.DataFrame({"shipment_id": ["X"], "customer_id": ["C"], "origin_hub": ["P-AAA"],
                          "destination_hub": ["P-BBB"], "service_level": ["standard"],
                          "weight_kg": [float("inf")], "volume_m3": [1.0], "parcel_count": [1],
                          "booked_at": [pd.Timestamp("2025-03-01", tz="UTC")],
                          "promised_at": [pd.Timestamp("2025-03-05", tz="UTC")]})
    with pytest.raises(Exception, match="weight_kg"):
        contract.validate("shipments", frame)
    f = write(tmp_path / "ships.csv", "\n".join(
        [SHIP_HEADER, ship(3, weight_kg="inf"), ship(4, volume_m3="Infinity"), ship(5)]) + "\n")
    assert cli("ingest", f, "--kind", "shipments").exit_code == 0
    assert ids(lake, "shipments", "shipment_id") == ["S1", "S2", "S5"]
    reasons = rejects_of(lake, "ships.csv")
    assert "weight_kg" in reasons[1] and "volume_m3" in reasons[2]


def test_nul_byte_in_text_rejects_the_row_instead_of_truncating_it(tmp_path, lake):
    body = "\n".join([EVENT_HEADER, event(1, note="before\x00after"), event(2)]) + "\n"
    assert cli("ingest", write(tmp_path / "events.csv", body), "--kind", "events").exit_code == 0
    assert ids(lake, "tracking_events", "event_id") == ["E2"]
    assert "NUL" in rejects_of(lake, "events.csv")[1]


def test_time_far_in_the_future_or_before_1970_is_rejected(tmp_path, lake):
    body = "\n".join([EVENT_HEADER, event(1, event_time="2200-01-01T00:00:00Z",
                                          ingested_at="2200-01-01T00:10:00Z"),
                      event(2, event_time="1969-12-31T23:00:00Z"), event(3)]) + "\n"
    assert cli("ingest", write(tmp_path / "events.csv", body), "--kind", "events").exit_code == 0
    assert ids(lake, "tracking_events", "event_id") == ["E3"]
    reasons = rejects_of(lake, "events.csv")
    assert "future" in reasons[1] and "1970" in reasons[2]


def test_unknown_columns_are_ignored_with_a_notice(tmp_path, lake):
    body = "\n".join([EVENT_HEADER + ",carrier_mood", event(1) + ",grumpy"]) + "\n"
    result = cli("ingest", write(tmp_path / "events.csv", body), "--kind", "events")
    assert result.exit_code == 0
    assert "carrier_mood" in result.output and "ignored" in result.output
    assert ids(lake, "tracking_events", "event_id") == ["E1"]


# -- how it ends ---------------------------------------------------------------------------------

def test_a_file_whose_rows_are_all_rejected_exits_1_with_a_summary(tmp_path, lake):
    body = "\n".join([EVENT_HEADER, event(1, event_type="teleported"),
                      event(2, hub_id="NOWHERE")]) + "\n"
    result = cli("ingest", write(tmp_path / "events.csv", body), "--kind", "events")
    assert result.exit_code == 1, result.output
    assert "2 rejected" in result.output and "0 accepted" in result.output
    assert not lake.exists("tracking_events")


def test_partly_rejected_exits_0_with_counts_and_the_rejects_path(tmp_path, lake):
    body = "\n".join([EVENT_HEADER, event(1), event(2, event_type="teleported")]) + "\n"
    result = cli("ingest", write(tmp_path / "events.csv", body), "--kind", "events")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "1 accepted" in text and "1 rejected" in text
    assert str(lake.root / "rejects") in result.output.replace("\n", "")


# -- file-level problems: refused in one sentence, nothing imported -------------------------------

def _refused(result, name: str, words: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert name in result.output and words in result.output.lower(), result.output


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"   \n\n", "empty"),
    (random.Random(3).randbytes(4000), "not a csv text file"),
    (b"hub_id\x00,name\n" + random.Random(4).randbytes(400), "not a csv text file"),
    (b'{"event_id": "E1", "shipment_id": "S1"}\n', "json"),
    (b"PAR1\x00\x00garbage", "parquet"),
    (b"\x1f\x8b\x08\x00compressed", "gzip"),
    (b"event_id;shipment_id;parcel_id\nE1;S1;P1\n", "not comma-separated"),
    (b"colour,size\nred,3\n", "none of the columns"),
    (b'event_id,"shipment_id\nE1,S1\n', "header line is malformed"),
    (b"event_id,event_id,shipment_id\nE1,E1,S1\n", "repeats a column name"),
])
def test_unreadable_csv_is_refused_in_one_sentence(tmp_path, lake, content, words):
    result = cli("ingest", write(tmp_path / "events.csv", content), "--kind", "events")
    _refused(result, "events.csv", words)
    assert not lake.exists("tracking_events") and rejects_of(lake, "events.csv").empty


def test_corrupt_parquet_is_refused(tmp_path, lake):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"event_id": ["E1"] * 100}), good)
    data = bytearray(good.read_bytes())
    data[20:60] = b"\xff" * 40  # damage the column chunk, keep the magic bytes
    result = cli("ingest", write(tmp_path / "events.parquet", bytes(data)), "--kind", "events")
    _refused(result, "events.parquet", "parquet")
    truncated = write(tmp_path / "cut.parquet", good.read_bytes()[:-30])
    _refused(cli("ingest", truncated, "--kind", "events"), "cut.parquet", "parquet")
    assert not lake.exists("tracking_events")


def test_json_file_is_refused_as_unsupported(tmp_path, lake):
    f = write(tmp_path / "events.json", json.dumps([{"event_id": "E1"}]))
    result = cli("ingest", f, "--kind", "events")
    assert result.exit_code == 2, result.output
    assert "events.json" in result.output and ".csv" in result.output


# -- --map mistakes: exit 2 naming --map -----------------------------------------------------------

@pytest.mark.parametrize("maps, words", [
    (["nonsense=hub_id"], "nonsense"),        # not a contract column
    (["hub_id=code"], "code"),                # no such column in the file
    (["hub_id"], "contract_column=source_column"),
    (["=hub_id"], "contract_column=source_column"),
    (["missing.json"], "missing.json"),
    (["bad.json"], "json"),
    (["list.json"], "object"),
    (["nested.json"], "object"),
])
def test_map_mistakes_exit_2_naming_the_option(tmp_path, data_dir, maps, words):
    hubs = write(tmp_path / "hubs.csv", HUBS)
    write(tmp_path / "bad.json", "{not json")
    write(tmp_path / "list.json", '["hub_id", "code"]')
    write(tmp_path / "nested.json", '{"hub_id": {"from": "code"}}')
    args = ["ingest", hubs, "--kind", "hubs"]
    for m in maps:
        args += ["--map", str(tmp_path / m) if m.endswith(".json") else m]
    result = cli(*args)
    assert result.exit_code == 2, result.output
    # the message as a person reads it: typer's box may wrap a long path across its lines
    flat = re.sub(r"[\s│╭╮╰╯─]+", "", result.output)
    assert "--map" in flat and words in flat, result.output
    assert not Lake(data_dir / "lake").exists("hubs")


def test_hostile_parquet_values_reject_their_rows_only(tmp_path, lake):
    """Typed Parquet columns: a year-3000 time (beyond pandas' nanoseconds), a huge unsigned
    integer, inf, NUL and undecodable bytes in a binary column reject their rows only."""
    t = pd.Timestamp("2025-03-01T10:00:00Z")
    n = 6
    table = pa.table({
        "shipment_id": [f"P{i}" for i in range(n)],
        "customer_id": pa.array([b"C1", b"C1", b"C1", b"C\xff", b"C1", b"C1"], pa.binary()),
        "origin_hub": ["P-AAA"] * n, "destination_hub": ["P-BBB"] * n,
        "service_level": ["standard", "standard", "standard", "standard", "exp\x00ress",
                          "standard"],
        "weight_kg": [1.0, float("inf"), 2.0, 2.0, 2.0, 2.0],
        "volume_m3": [1.0] * n,
        "parcel_count": pa.array([1, 1, 2**64 - 1, 1, 1, 1], pa.uint64()),
        "booked_at": pa.array([t.to_pydatetime()] * n, pa.timestamp("us", tz="UTC")),
        "promised_at": pa.array([pd.Timestamp("2025-03-05").to_pydatetime()] * (n - 1)
                                + [pd.Timestamp("3000-01-01").to_pydatetime()],
                                pa.timestamp("us")),
    })
    pq.write_table(table, tmp_path / "ships.parquet")
    result = cli("ingest", tmp_path / "ships.parquet", "--kind", "shipments")
    assert result.exit_code == 0, result.output
    assert ids(lake, "shipments", "shipment_id") == ["P0", "S1", "S2"]
    reasons = rejects_of(lake, "ships.parquet")
    assert list(reasons.index) == [2, 3, 4, 5, 6]
    for row, words in {2: "weight_kg: not a finite number", 3: "parcel_count: integer out of",
                       4: "customer_id: not valid UTF-8", 5: "service_level: contains a NUL",
                       6: "promised_at: too far in the future"}.items():
        assert words in reasons[row], (row, reasons[row])
