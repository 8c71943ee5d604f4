"""The stream reads a time text as the same UTC instant as `shipdelay ingest` stores for it: the
two paths parse separately, so the test runs real ingest on a CSV and the stream's parser on
messages holding the same texts, naive and offset times mixed in one batch and one file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from serving.stream_parse import parse_batch
from shipdelay.ingest import ingest
from shipdelay.lake import Lake

HUB = {"hub_id": "D-AAA", "name": "A", "kind": "depot", "city": "A", "country": "DE",
       "region": "europe", "latitude": 50.0, "longitude": 8.0}
SHIPMENT = {"shipment_id": "SH1", "customer_id": "C1", "origin_hub": "D-AAA",
            "destination_hub": "D-AAA", "service_level": "standard", "weight_kg": 1.0,
            "volume_m3": 0.1, "parcel_count": 1, "booked_at": "2019-01-01T00:00:00Z",
            "promised_at": (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=30)).isoformat()}
FIXED = ["2025-02-28T10:00:00+05:00", "2025-02-28T10:00:00", "2025-02-28 10:00", "2025-02-28",
         "20240301T100000", "2025-02-28T10:00:00Z", "2025-02-28T10:00:00-03:30",
         "2025-02-28T10:00:00.123456Z", "2025-02-28T10:00:00.1234567Z",
         "2025-02-28T10:00:00+0530", " 2025-02-28T10:00:00Z ", "2025-02-28T10", "2025-02",
         "2025-02-28T10:00:00 +05:00", "2025-02-28T10:00:00.5", "01/02/2024", "2025-02-30",
         "2025-02-28T25:00:00", "1677-01-01T00:00:00Z", "2025-02-28T10:00:00z", "NaT", "0"]


def _generated(n: int, seed: int) -> list[str]:
    """Random instants in random ISO-8601 renderings, naive and offset shuffled together."""
    rng = np.random.default_rng(seed)
    base = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 4 * 365 * 86_400, n),
                                                          unit="s")
    micros = rng.integers(0, 1_000_000, n)
    out = []
    for t, us, form in zip(base, micros, rng.integers(0, 8, n)):
        t = t + pd.Timedelta(microseconds=int(us) if form % 2 else 0)
        text = t.isoformat()
        out.append([text, text + "Z", text + "+05:00", text.replace("T", " "), text + "-0800",
                     t.strftime("%Y%m%dT%H%M%S"), text + "+13:45", t.strftime("%Y-%m-%d")][form])
    return out


def _grammar(n: int, seed: int) -> list[str]:
    """Texts of the contract's time grammar with random digits: impossible dates, hours,
    offsets and fractions among them, where two parsers are most likely to disagree."""
    rng = np.random.default_rng(seed)

    def digits(k: int, top: int = 10) -> str:
        return "".join(str(d) for d in rng.integers(0, top, k))

    out = []
    for _ in range(n):
        basic = rng.random() < 0.3
        date = (f"{rng.integers(1969, 2026)}{digits(1, 2)}{digits(1)}{digits(1, 4)}{digits(1)}"
                if basic else f"{rng.integers(1969, 2026)}-{digits(1, 2)}{digits(1)}-"
                f"{digits(1, 4)}{digits(1)}")
        sep = ":" if rng.random() < 0.8 else ""
        clock = rng.choice(["", f"T{digits(1, 3)}{digits(1)}",
                            f"T{digits(1, 3)}{digits(1)}{sep}{digits(1, 7)}{digits(1)}",
                            f" {digits(1, 3)}{digits(1)}{sep}{digits(1, 7)}{digits(1)}{sep}"
                            f"{digits(1, 7)}{digits(1)}"
                            + ("." + digits(int(rng.integers(1, 10))) if rng.random() < 0.4
                               else "")])
        offset = f"-{digits(1, 2)}{digits(1)}:{digits(1, 7)}{digits(1)}"
        zone = rng.choice(["", "Z", f"+{digits(1, 3)}{digits(1)}", offset,
                           f"+{digits(2)}{digits(2)}"]) if clock else ""
        out.append(date + clock + zone)
    return out


def _ingested(tmp_path, texts: list[str]) -> pd.Series:
    """What ingest stores for each text as an event's time (NaT: rejected)."""
    lake = Lake(tmp_path / "lake")
    pd.DataFrame([HUB]).to_csv(tmp_path / "hubs.csv", index=False)
    pd.DataFrame([SHIPMENT]).to_csv(tmp_path / "shipments.csv", index=False)
    events = pd.DataFrame({"event_id": [f"E{i}" for i in range(len(texts))],
                           "shipment_id": "SH1", "parcel_id": "SH1-P1", "event_time": texts,
                           "ingested_at": texts, "event_type": "arrived", "hub_id": "D-AAA"})
    events.to_csv(tmp_path / "events.csv", index=False)
    for name, kind in (("hubs", "hubs"), ("shipments", "shipments"), ("events", "events")):
        report = ingest(tmp_path / f"{name}.csv", kind, lake)
        assert kind == "events" or report.accepted == 1, report.summary()
    stored = lake.read("tracking_events", columns=["event_id", "event_time"])
    return stored.set_index("event_id")["event_time"].reindex(events["event_id"]).reset_index(
        drop=True)


def _streamed(texts: list[str]) -> pd.Series:
    """The stream's instant for each text, all in one micro-batch (NaT: dead-lettered)."""
    values = [json.dumps({"event_id": f"E{i}", "shipment_id": "SH1", "parcel_id": "SH1-P1",
                          "event_time": t, "ingested_at": t, "event_type": "arrived",
                          "hub_id": "D-AAA"}).encode() for i, t in enumerate(texts)]
    meta = pd.DataFrame({"partition": 0, "offset": np.arange(len(values)), "produced_ms": 0})
    parsed = parse_batch(values, [b"SH1"] * len(values), meta)
    refused = parsed.dead["reason"].str.match("event_time (is not an ISO-8601 time|before 1970)")
    assert refused.all(), parsed.dead["reason"].tolist()
    got = parsed.events.set_index("event_id")["event_time"]
    return got.reindex([f"E{i}" for i in range(len(texts))]).reset_index(drop=True)


def test_the_stream_and_ingest_give_the_same_instant_for_every_time_text(tmp_path, data_dir):
    texts = FIXED + _generated(300, seed=5) + _grammar(300, seed=6)
    order = np.random.default_rng(1).permutation(len(texts))  # offsets before naive ones too
    texts = [texts[i] for i in order]
    ingested = _ingested(tmp_path, texts).astype("datetime64[ns, UTC]")
    assert ingested.notna().sum() > 350 and ingested.isna().sum() > 100  # both kinds present
    # all in one batch (a kind holding a form Arrow does not read is parsed by pandas), and
    # each alone (Arrow reads every text it can)
    together = _streamed(texts)
    alone = pd.concat([_streamed([t]) for t in texts], ignore_index=True)
    pd.testing.assert_series_equal(together, ingested, check_names=False)
    pd.testing.assert_series_equal(alone, ingested, check_names=False)


def test_words_pandas_reads_as_times_are_not_times_in_the_stream():
    streamed = _streamed(["now", "today", "2025-02-28T10:00:00Z"])
    assert streamed.isna().tolist() == [True, True, False]
