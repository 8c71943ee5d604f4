"""Two `shipdelay stream` consumers in one group split the partitions and end in the state one
consumer reaches: the batch backfill of the same events."""

from __future__ import annotations

import re
import time

from tests.integration.stream.checks import (
    applied_events,
    assert_dead_letters,
    assert_equals_backfill,
    assert_risk_updates,
)
from tests.integration.stream.conftest import (
    build_stream,
    make_case,
    produce,
    start_stream,
    stop,
    wait_exit,
)


def test_two_consumers_split_the_partitions_and_agree_with_one(stream_world, kafka, tmp_path):
    case = make_case(stream_world, tmp_path / "data", "sqlite", kafka)
    stream = build_stream(case.settings, case.cut, seed=11)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_stream(case, "--idle-exit", "10", log=log) for log in logs]
    try:
        deadline = time.monotonic() + 180
        while not all("partitions assigned: [" in log.read_text() if log.exists() else False
                      for log in logs):
            assert all(p.poll() is None for p in procs), [x.read_text()[-2000:] for x in logs]
            assert time.monotonic() < deadline, "the consumers never joined"
            time.sleep(0.1)
        produce(case.settings, stream)
        for proc, log in zip(procs, logs):
            wait_exit(proc, 300, log)
    finally:
        for proc in procs:
            stop(proc)
    shares = []
    for log in logs:  # the partitions each consumer took events from
        seen = re.findall(r'"partitions": \[([0-9, ]*)\]', log.read_text())
        shares.append({int(x) for x in seen[-1].split(",") if x.strip()})
    assert shares[0] and shares[1] and not shares[0] & shares[1], shares
    assert shares[0] | shares[1] == {0, 1, 2, 3}
    assert applied_events(logs[0]) > 0 and applied_events(logs[1]) > 0
    touched = assert_equals_backfill(case, stream)
    assert_dead_letters(case, stream)
    assert_risk_updates(case, touched)
