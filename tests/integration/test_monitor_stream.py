"""The stream's prediction log across a SIGKILL: `shipdelay stream` killed mid-stream and run
again to the end loses no prediction. Every risk update the stream published for a moving
shipment is in the log, unless the replay after the kill superseded it (the same shipment's
later update is logged instead); nothing is logged that was not published; each shipment's final
risk is logged; a prediction logged twice by the replay is read once."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pandas as pd

from monitoring.reader import LogReader, log_days
from serving.kafka import Topics
from shipdelay.lake import Lake
from shipdelay.parquet_io import read_table
from tests.integration.stream.conftest import (  # noqa: F401 - fixtures used by name
    build_stream,
    kafka,
    make_case,
    produce,
    read_topic,
    start_stream,
    stop,
    stream_parts,
    stream_world,
    wait_exit,
)

KEY = ["shipment_id", "as_of"]


def test_a_sigkilled_stream_loses_no_logged_prediction(stream_world, kafka, tmp_path):  # noqa: F811
    case = make_case(stream_world, tmp_path / "data", "sqlite", kafka)
    stream = build_stream(case.settings, case.cut)
    produce(case.settings, stream)
    log = tmp_path / "stream.log"
    procs = []
    try:
        proc = start_stream(case, log=log)
        procs.append(proc)
        deadline = time.monotonic() + 180
        while stream_parts(case) < 4:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no progress:\n" + log.read_text()[-3000:]
            time.sleep(0.02)
        time.sleep(np.random.default_rng(11).uniform(0, 0.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed_at = stream_parts(case)
        final = start_stream(case, "--idle-exit", "5", log=log)
        procs.append(final)
        wait_exit(final, 300, log)
    finally:
        for p in procs:
            stop(p)
    assert stream_parts(case) > killed_at, "the kill left nothing for the second run"

    root = case.settings.predictions_dir
    files = [f for fs in log_days(root).values() for f in fs]
    raw = pd.concat([read_table(f).to_pandas() for f in files], ignore_index=True)
    raw["as_of"] = pd.to_datetime(raw["instant"], utc=True)
    logged = raw.drop_duplicates(KEY).set_index(KEY)

    updates = pd.DataFrame([json.loads(m.value()) for m in read_topic(
        case.settings, Topics.from_settings(case.settings).risk)])
    updates = updates[~updates["delivered"].astype(bool)]
    updates["as_of"] = pd.to_datetime(updates["as_of"], utc=True).dt.floor("us")
    published = updates.drop_duplicates(KEY).set_index(KEY)
    assert len(published) > 50

    # nothing invented: every logged prediction was published, with the same P(late)
    assert logged.index.isin(published.index).all()
    same = published.loc[logged.index]
    assert np.allclose(logged["p_late"], same["p_late"].astype(float), atol=2e-6)
    # nothing lost: a published update missing from the log was superseded by a later one
    missing = published.index[~published.index.isin(logged.index)].to_frame(index=False)
    newest = logged.reset_index().groupby("shipment_id")["as_of"].max()
    later = missing["shipment_id"].map(newest)
    assert (later > missing["as_of"]).all(), missing[~(later > missing["as_of"])].head()
    last = updates.sort_values("as_of").drop_duplicates("shipment_id", keep="last")
    assert pd.MultiIndex.from_frame(last[KEY]).isin(logged.index).all()

    # a replayed batch's second copy is dropped on read
    t = raw["as_of"].max() + pd.Timedelta(seconds=1)
    reader = LogReader(root, Lake(case.settings.lake_dir), t, raw["as_of"].min().date(),
                       t.date())
    rows = int(reader.counts_by_day()["logged"].sum())
    reader.close()
    assert rows == len(raw.drop_duplicates([*KEY, "path", "model_version"]))
    assert reader.duplicates == len(raw) - rows
