"""Each key's latest row at one cut-off (`training.dataset._latest_at`), the batch's and the
parity check's read, against pandas on hand-made offline views: rows after the cut-off and
outside the TTL's day folders ignored, a tie at a key's newest stamp kept once, and a shipment
view kept to the shipments asked about (whose oldest newest row bounds the days read)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.schema import TIMESTAMP
from shipdelay.lake import write_parquet_atomic
from shipdelay.memory import offline_connection
from training.dataset import _READ, _latest_at


def _rows(view: str, key: str, stamps: list[str], keys: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({key: keys,
                          TIMESTAMP: pd.to_datetime(stamps, utc=True, format="ISO8601")})
    for c in _READ[view]:
        frame[c] = rng.normal(size=len(frame))
    return frame


@pytest.mark.parametrize("view, key, wanted", [("lane_stats", "lane_id", None),
                                               ("shipment_progress", "shipment_id", "ABD")])
def test_latest_rows_at_an_odd_instant_with_a_tie(tmp_path, view, key, wanted):
    offline = tmp_path / "offline"

    def _write(day: str, name: str, frame: pd.DataFrame) -> None:
        write_parquet_atomic(pa.Table.from_pandas(frame, preserve_index=False),
                             offline / view / day / f"part-{name}.parquet")

    old = _rows(view, key, ["2024-06-01T10:00Z"], ["A"], 1)  # beyond every TTL's folders
    day1 = _rows(view, key, ["2025-03-09T01:00Z", "2025-03-09T05:00Z", "2025-03-09T07:00Z"],
                 ["A", "B", "C"], 2)
    day2 = _rows(view, key, ["2025-03-10T13:17:05.5Z", "2025-03-10T13:17:05.5Z",
                             "2025-03-10T13:17:06Z", "2025-03-10T09:00Z"], ["A", "A", "B", "D"], 3)
    day2.iloc[1, 2:] = day2.iloc[0, 2:]  # the same row twice: A's newest stamp, in two parts
    _write("2024-06-01", "a", old)
    _write("2025-03-09", "a", day1)
    _write("2025-03-10", "a", day2.iloc[[0, 2, 3]])
    _write("2025-03-10", "b", day2.iloc[[1]])
    cut = pd.Timestamp("2025-03-10T13:17:05.9Z")  # B's newest row is 0.1 s after it

    con = offline_connection(0.5, data_dir=tmp_path)
    try:
        if wanted:
            con.register("wanted", pd.DataFrame({"shipment_id": list(wanted)}))
        table = _latest_at(con, offline, view, cut, "wanted" if wanted else None)
        got = con.sql(f"select * from {table}").df()
    finally:
        con.close()

    rows = pd.concat([day1, day2], ignore_index=True)
    rows = rows[(rows[TIMESTAMP] <= cut) & rows[key].isin(list(wanted or "ABCD"))]
    want = rows.loc[rows.groupby(key)[TIMESTAMP].idxmax()]
    got = got.sort_values(key, ignore_index=True)
    want = want.sort_values(key, ignore_index=True)
    assert got[key].tolist() == list(wanted or "ABCD")
    pd.testing.assert_series_equal(got[TIMESTAMP].dt.tz_convert("UTC"), want[TIMESTAMP],
                                   check_dtype=False)
    np.testing.assert_array_equal(got[_READ[view]].to_numpy(), want[_READ[view]].to_numpy())
