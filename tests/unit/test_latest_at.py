"""Each key's latest row at one cut-off (`training.dataset._latest_at`), the batch's and the
parity check's read, against pandas on a hand-made offline view: rows after the cut-off and
outside the TTL's day folders ignored, a tie at a key's newest stamp kept once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.schema import TIMESTAMP
from shipdelay.lake import write_parquet_atomic
from shipdelay.memory import offline_connection
from training.dataset import _READ, _latest_at

VIEW = "lane_stats"
KEY = "lane_id"


def _rows(stamps: list[str], keys: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({KEY: keys, TIMESTAMP: pd.to_datetime(stamps, utc=True, format="ISO8601")})
    for c in _READ[VIEW]:
        frame[c] = rng.normal(size=len(frame))
    return frame


def _write(offline, day: str, name: str, frame: pd.DataFrame) -> None:
    write_parquet_atomic(pa.Table.from_pandas(frame, preserve_index=False),
                         offline / VIEW / day / f"part-{name}.parquet")


def test_latest_rows_at_an_odd_instant_with_a_tie(tmp_path):
    offline = tmp_path / "offline"
    old = _rows(["2025-03-01T10:00Z"], ["A"], 1)  # beyond the 2-day TTL's folders
    day1 = _rows(["2025-03-09T01:00Z", "2025-03-09T05:00Z", "2025-03-09T07:00Z"],
                 ["A", "B", "C"], 2)
    day2 = _rows(["2025-03-10T13:17:05.5Z", "2025-03-10T13:17:05.5Z", "2025-03-10T13:17:06Z",
                  "2025-03-10T09:00Z"], ["A", "A", "B", "D"], 3)
    day2.iloc[1, 2:] = day2.iloc[0, 2:]  # the same row twice: A's newest stamp, in two parts
    _write(offline, "2025-03-01", "a", old)
    _write(offline, "2025-03-09", "a", day1)
    _write(offline, "2025-03-10", "a", day2.iloc[[0, 2, 3]])
    _write(offline, "2025-03-10", "b", day2.iloc[[1]])
    cut = pd.Timestamp("2025-03-10T13:17:05.9Z")  # B's newest row is 0.1 s after it

    con = offline_connection(0.5, data_dir=tmp_path)
    try:
        table = _latest_at(con, offline, VIEW, cut)
        got = con.sql(f"select * from {table}").df()
    finally:
        con.close()

    rows = pd.concat([day1, day2], ignore_index=True)
    rows = rows[rows[TIMESTAMP] <= cut]
    want = rows.loc[rows.groupby(KEY)[TIMESTAMP].idxmax()]
    got = got.sort_values(KEY, ignore_index=True)
    want = want.sort_values(KEY, ignore_index=True)
    assert got[KEY].tolist() == ["A", "B", "C", "D"]
    pd.testing.assert_series_equal(got[TIMESTAMP].dt.tz_convert("UTC"), want[TIMESTAMP],
                                   check_dtype=False)
    np.testing.assert_array_equal(got[_READ[VIEW]].to_numpy(), want[_READ[VIEW]].to_numpy())
