"""Fixtures of the stream scorer's tests: the `trained` world rewound to a cut a few weeks before
its end (online and offline progress as the lake's earlier events give it), an embedded Kafka
cluster in its own process, the later events as messages with bad ones mixed in, and helpers
that run, kill and read the stream the way an operator would (separate processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.online_direct import open_direct
from registry.loader import CHAMPION, alias_version, load_by_alias
from registry.store import MODEL_NAME, client
from serving.compiled_trees import compiled_for
from serving.kafka import Topics, producer_config, read_all
from serving.kafka_mock import MockCluster
from serving.replay import lake_events, publish, to_messages
from serving.stream_setup import rewind, workspace
from shipdelay.settings import Settings
from tests.conftest import redis_or_skip

warnings.filterwarnings("ignore", category=DeprecationWarning)

ROOT = Path(__file__).resolve().parents[3]
SHIPDELAY = str(ROOT / ".venv" / "bin" / "shipdelay")
STREAM_DAYS = 18  # the world's last days are streamed: ~7,000 events, well inside the mock's
# retention (~5 MB per partition)
REDIS_DBS = (10, 11, 6, 14, 15)  # 3+worker are the feature-store tests', 12 and 13 the benchmarks'


@dataclass
class Case:
    settings: Settings
    cut: pd.Timestamp
    env: dict[str, str]


def redis_db() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return REDIS_DBS[int(worker[2:] or 0) % len(REDIS_DBS)]


@pytest.fixture(scope="session")
def stream_world(trained):
    """The trained world's settings and the cut: the stream carries events ingested after it."""
    settings, _, _ = trained
    # the model's trees compiled once here: every workspace copies them, so a stream process
    # (four starts in a SIGKILL test) loads them instead of compiling again
    compiled_for(settings, load_by_alias(settings, "challenger"))
    events = lake_events(settings)
    cut = events["ingested_at"].max() - pd.Timedelta(days=STREAM_DAYS)
    return settings, cut


def make_case(stream_world, root: Path, store: str, bootstrap: str) -> Case:
    source, cut = stream_world
    overrides = {}
    if store == "redis":
        db = redis_db()
        redis_or_skip(db)
        overrides = {"online_store": "redis", "redis_url": f"redis://127.0.0.1:6379/{db}"}
    settings = workspace(source, root, kafka_bootstrap=bootstrap, **overrides)
    c = client(settings)
    if alias_version(settings, CHAMPION) is None:
        version = alias_version(settings, "challenger") or max(
            (mv.version for mv in c.search_model_versions(f"name='{MODEL_NAME}'")), key=int)
        c.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    if store == "redis":
        from features.store import get_store

        feast = get_store(settings)
    rewind(settings, cut)  # progress, statistics and weather as of the cut, online and offline
    if store == "redis":  # the profiles into Redis as `features build` loads them
        feast.materialize(start_date=(cut - pd.Timedelta(days=400)).to_pydatetime(),
                          end_date=(cut + pd.Timedelta(days=STREAM_DAYS + 1)).to_pydatetime(),
                          feature_views=["shipment_profile"])
    env = {**os.environ, "SHIPDELAY_DATA_DIR": str(root), "SHIPDELAY_KAFKA_BOOTSTRAP": bootstrap,
           "SHIPDELAY_ONLINE_STORE": store, "PYTHONWARNINGS": "ignore"}
    if store == "redis":
        env["SHIPDELAY_REDIS_URL"] = overrides["redis_url"]
    return Case(settings, cut, env)


@pytest.fixture
def kafka():
    with MockCluster() as bootstrap:
        yield bootstrap


# ---------------------------------------------------------------------------- messages

@dataclass
class Stream:
    events: pd.DataFrame  # the lake's events after the cut, in the order produced
    values: list[bytes]
    keys: list[bytes]
    bad: dict[bytes, str]  # injected invalid payload -> the reason's expected start
    duplicates: int  # valid events sent a second time


def build_stream(settings: Settings, cut: pd.Timestamp, seed: int = 3) -> Stream:
    """The lake's events after `cut` as messages, with invalid ones and re-sent duplicates
    mixed in at random places."""
    rng = np.random.default_rng(seed)
    events = lake_events(settings, since=cut)
    values, keys = to_messages(events)
    good = json.loads(values[0])
    delivered = lake_events(settings)
    delivered = delivered[(delivered["event_type"] == "delivered")
                          & (delivered["ingested_at"] < cut - pd.Timedelta(days=3))]
    done = delivered.iloc[-1]
    after = {**json.loads(to_messages(delivered.tail(1))[0][0]), "event_id": "EV-AFTER-DELIVERY",
             "event_type": "arrived", "leg_index": 0,
             "event_time": (cut + pd.Timedelta(hours=1)).isoformat(),
             "ingested_at": (cut + pd.Timedelta(hours=2)).isoformat()}
    bad = {
        b'{"event_id": "EV-BROKEN", "shipment_id": ': "malformed JSON",
        b"not json at all": "malformed JSON",
        b"[1, 2, 3]": "not a JSON object",
        json.dumps({k: v for k, v in good.items() if k != "event_type"}
                   | {"event_id": "EV-NO-TYPE"}).encode(): "missing field event_type",
        json.dumps(good | {"event_id": "EV-BAD-LEG", "leg_index": "two"}).encode():
            "wrong type: leg_index",
        json.dumps(good | {"event_id": "EV-BAD-TYPE", "event_type": "teleported"}).encode():
            "unknown event_type",
        json.dumps(good | {"event_id": "EV-FUTURE",
                          "event_time": "2031-01-01T00:00:00Z"}).encode():
            "event_time in the future",
        json.dumps(good | {"event_id": "EV-UNKNOWN", "shipment_id": "SH-NO-SUCH"}).encode():
            "unknown shipment",
        json.dumps(after).encode(): "event after the shipment's delivery",
        b"": "empty message",
    }
    bad_keys = {v: good["shipment_id"].encode() for v in bad}
    bad_keys[next(v for v in bad if b"EV-UNKNOWN" in v)] = b"SH-NO-SUCH"
    bad_keys[json.dumps(after).encode()] = str(done["shipment_id"]).encode()
    again = rng.choice(len(values) // 2, size=25, replace=False)
    out_v, out_k = list(values), list(keys)
    for i in sorted(again, reverse=True):  # re-send 25 events a little later
        at = min(len(out_v), i + int(rng.integers(5, 400)))
        out_v.insert(at, values[i])
        out_k.insert(at, keys[i])
    for v in bad:
        at = int(rng.integers(0, len(out_v)))
        out_v.insert(at, v)
        out_k.insert(at, bad_keys[v])
    return Stream(events, out_v, out_k, bad, len(again))


def produce(settings: Settings, stream: Stream) -> None:
    from confluent_kafka import Producer

    producer = Producer(producer_config(settings))
    publish(producer, Topics.from_settings(settings).events, stream.values, stream.keys,
            np.zeros(len(stream.values)))


def read_topic(settings: Settings, topic: str, idle_s: float = 4.0,
               timeout_s: float = 120) -> list:
    """Every message of `topic` from the beginning, until idle."""
    return read_all(settings, topic, idle_s, timeout_s)


# ---------------------------------------------------------------------------- processes

def start_stream(case: Case, *args: str, log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([SHIPDELAY, "stream", "--max-batch", "300", "--batch-ms", "100",
                             "--summary-every", "5", *args], env=case.env, cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def wait_exit(proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError(f"the stream did not finish in {timeout_s} s:\n"
                             + log.read_text()[-3000:]) from None
    assert proc.returncode == 0, log.read_text()[-3000:]


def stream_parts(case: Case) -> int:
    """Micro-batches committed so far (distinct tokens of the stream's offline parts)."""
    from features.store import offline_dir

    files = (offline_dir(case.settings) / "shipment_progress").glob("*/part-stream-*")
    return len({f.name for f in files})


def direct(case: Case):
    return open_direct(case.settings)
