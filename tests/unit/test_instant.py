"""The rule of a value at an instant, and the stored timestamps it reads, against references."""

from __future__ import annotations

import numpy as np
import pandas as pd
from google.protobuf.timestamp_pb2 import Timestamp

from features.instant import TTL_US, fresh, from_proto, from_sqlite, micros, present


def test_proto_timestamps_decode_as_protobuf_reads_them():
    rng = np.random.default_rng(1)
    # (the epoch itself serializes to no bytes at all: a missing timestamp, as Feast's none)
    seconds = np.concatenate([[0, 1, 127, 128, 2**31 - 1, 2**34], rng.integers(1, 2**33, 300)])
    nanos = np.concatenate([[7000, 999_999_000, 0, 1000, 5000, 0],
                            rng.integers(0, 10**6, 300) * 1000])
    blobs = [Timestamp(seconds=int(s), nanos=int(n)).SerializeToString()
             for s, n in zip(seconds, nanos)] + [None, b""]
    expected = [s * 1_000_000 + n // 1000 for s, n in zip(seconds.tolist(), nanos.tolist())]
    for some in (blobs, blobs[:5] + blobs[-2:]):  # the vectorized path and the small one
        got = from_proto(some)
        want = expected[:len(some) - 2] if len(some) > 10 else expected[:5]
        assert got[:-2].tolist() == [float(x) for x in want]
        assert np.isnan(got[-2:]).all()


def test_sqlite_stamps_are_whole_seconds_or_iso_text():
    got = from_sqlite([1_761_523_162, None, "2025-10-26 23:59:22.139277"])
    assert got[0] == 1_761_523_162e6 and np.isnan(got[1])
    assert got[2] == micros(pd.Timestamp("2025-10-26 23:59:22.139277", tz="UTC"))


def test_a_row_counts_from_its_stamp_until_its_ttl():
    now = micros("2025-10-26 12:00:00")
    ttl = TTL_US["hub_weather"]
    stamps = np.array([now, now + 1, now - ttl, now - ttl - 1, np.nan])
    assert present(stamps, now).tolist() == [True, False, True, True, False]
    assert fresh("hub_weather", stamps, now).tolist() == [True, False, True, False, False]
    per_row = np.array([now, now + 1, now, now, now])
    assert fresh("hub_weather", stamps, per_row).tolist() == [True, True, True, False, False]
