"""Time to first render of the cockpit's pages in headless Chromium, 50,000 shipments in flight.

Target (full size): the Now page (`/`) and one shipment page (`/shipment/<id>`) each show their
first content within 1 s on 2 cores.

The world: the tests' small simulated world (3,000 shipments over 60 days, `shipdelay simulate`,
kept under `~/.cache/shipdelay-bench/`), whose nightly scores table is written for its
shipments in flight and then enlarged to 50,000 distinct shipments (quick: 5,000) by copying
rows with new ids (`<id>-c<k>`): the copies keep the original's mode, lane, customer and carrier,
get freshly drawn P(late), delay quantiles and bands, and are not in the lake, so their route
and current hub show as blank (the cockpit still joins all 50,000 ids to the lake). No model is
needed: the cockpit only reads the scores table.

Measured: `shipdelay cockpit --port <free>` as a subprocess (no service URL: the Now page renders
from the nightly scores), driven by headless Chromium (selenium, `tests/integration/browser.py`).
For each page a fresh server and a fresh browser profile, then 5 loads: the first is cold (the
browser has no cache; the server answered a moment before, while Chromium started, and loads
the nightly run in the background from its start), the others warm (median reported). "At
start" rows: the browser is started first and the page asked the instant the server answers,
so the first load also waits for whatever remains of the server's load of the nightly run;
that load alone is timed in this process (`cockpit.state.load_world`, the same data). A
load's time is `performance.now()` in the page (milliseconds since navigation start) when the
risk table shows its first cells (Now) or the shipment's reasons are shown (shipment page),
polled every 20 ms. The split comes from the page's resource timing: when the browser sent the
page's callback (`_dash-update-component`: Dash's scripts loaded and started), how long the
server took to answer it (and its size), and what is left: the browser drawing the answer. Reference (same run): Chromium loading a static HTML file with a
25-row table (the Dash server has no trivial page: every path renders a data page).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from harness import PROFILE_ENV, ROOT, SHIPDELAY, cached_world, row, scratch_dir, simulate_command

WORLD = {"shipments": 3_000, "days": 60, "seed": 11, "workers": 1, "ceiling_shipments": 150,
         "ceiling_draws": 40}
FULL, QUICK = 50_000, 5_000
TARGET_S = 1.0
REPEATS = 5
WAIT_S = 60.0

STATIC_PAGE = """<!doctype html><html><head><title>static</title></head><body>
<h2>A static table</h2><table id="static-table"><tr><th>id</th><th>value</th></tr>{rows}</table>
</body></html>"""


def world() -> Path:
    """The small world's data folder (built once and kept)."""
    sources = [ROOT / "shipdelay" / "world" / "simulate.py"]
    data, _ = cached_world("cockpit", WORLD, [simulate_command(WORLD)], sources, PROFILE_ENV)
    return data


def write_scores(data: Path, lake_dir: Path, size: int, seed: int = 1) -> tuple[int, str]:
    """A nightly scores partition of `size` distinct shipments in flight under `data/scores`:
    the lake's own in-flight shipments, then copies with new ids. Returns the number of
    original shipments and one original high-band id (for the shipment page)."""
    import pyarrow as pa

    from shipdelay.lake import Lake, write_parquet_atomic
    from shipdelay.settings import Settings
    from tests.integration.test_cockpit_world import REASON, SCORES_SCHEMA, in_flight

    lake = Lake(lake_dir)
    moving, now = in_flight(lake)
    legs = lake.read("legs", columns=["shipment_id", "leg_index", "mode", "carrier_id"])
    first = legs.sort_values("leg_index").drop_duplicates("shipment_id")
    moving = moving.merge(first, on="shipment_id", how="left")
    originals = len(moving)
    pick = np.arange(size) % originals
    copy_no = np.arange(size) // originals
    base = moving.iloc[pick].reset_index(drop=True)
    ids = base["shipment_id"].astype(str)
    ids = ids.where(copy_no == 0, ids + "-c" + pd.Series(copy_no).astype(str))
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 2.5, size)
    band = np.where(p >= 0.6, "high", np.where(p >= 0.3, "medium", "low"))
    p50 = rng.normal(-5, 20, size) + 40 * p
    p90 = p50 + rng.uniform(2, 30, size)
    promised = pd.to_datetime(base["promised_at"], utc=True)
    scores = pd.DataFrame({
        "shipment_id": ids, "as_of": now, "mode": base["mode"].astype(str),
        "lane": base["origin_hub"].astype(str) + "-" + base["destination_hub"].astype(str),
        "customer": base["customer_id"].astype(str), "carrier": base["carrier_id"].astype(str),
        "p_late": p, "risk_band": band, "delay_p50_h": p50, "delay_p90_h": p90,
        "eta": (promised + pd.to_timedelta(p50, unit="h")).dt.floor("us"),
        "eta_p10": (promised + pd.to_timedelta(2 * p50 - p90, unit="h")).dt.floor("us"),
        "eta_p90": (promised + pd.to_timedelta(p90, unit="h")).dt.floor("us"),
        "reasons": [[REASON] if b == "high" else [] for b in band],
        "model_version": "3",
    })
    settings = Settings(data_dir=data)
    folder = settings.scores_dir / f"run_date={now.date().isoformat()}"
    write_parquet_atomic(pa.Table.from_pandas(scores, schema=SCORES_SCHEMA, preserve_index=False),
                         folder / "part-0.parquet")
    high = scores.loc[(copy_no == 0) & (band == "high"), "shipment_id"]
    return originals, str(high.iloc[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def key_env() -> dict[str, str]:
    """The key file this process encrypts with (the scores table it wrote), for the cockpit's
    process: encryption is configured per process, and the cockpit's data folder has no keys
    of its own."""
    from shipdelay import crypto

    enc = crypto.active()
    return {"SHIPDELAY_ENCRYPTION_KEY_FILE": str(enc.key_file)} if enc is not None else {}


def start_cockpit(data: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`shipdelay cockpit` on a free port of 127.0.0.1, once it answers."""
    import urllib.request

    port = _free_port()
    env = {**os.environ, **PROFILE_ENV, "SHIPDELAY_DATA_DIR": str(data)}
    for name in ("SHIPDELAY_COCKPIT_SERVICE_URL", "SHIPDELAY_API_KEY"):
        env.pop(name, None)
    env.update(key_env())
    proc = subprocess.Popen([SHIPDELAY, "cockpit", "--port", str(port)], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the cockpit stopped: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/_dash-layout", timeout=2).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the cockpit did not answer within 120 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


SPLIT_JS = """
const calls = performance.getEntriesByType('resource')
  .filter(e => e.name.includes('_dash-update-component'))
  .sort((a, b) => a.startTime - b.startTime);
const first = calls[0];
return {shown_ms: arguments[0],
        callback_sent_ms: first ? first.startTime : null,
        callback_ms: first ? first.responseEnd - first.startTime : null,
        callback_bytes: first ? first.decodedBodySize : null};
"""


def load_once(driver, url: str, css: str) -> dict:
    """One navigation to `url`: ms from navigation start until `css` matches (page clock)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    start = time.perf_counter()
    driver.get(url)
    WebDriverWait(driver, WAIT_S, poll_frequency=0.02).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, css))
    shown_ms = driver.execute_script("return performance.now();")
    wall_s = time.perf_counter() - start
    split = driver.execute_script(SPLIT_JS, shown_ms)
    return {"shown_s": round(shown_ms / 1000, 3), "wall_s": round(wall_s, 3),
            "callback_sent_s": _s(split["callback_sent_ms"]),
            "server_callback_s": _s(split["callback_ms"]),
            "callback_response_bytes": split["callback_bytes"]}


def _s(ms) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def series(data: Path, url_path: str, css: str, tmp: Path, name: str,
           at_start: bool = False) -> list[dict]:
    """A fresh cockpit and a fresh browser, then REPEATS loads of one page (`at_start`: the
    browser first, the first load the instant the server answers)."""
    from tests.integration.browser import start_chromium

    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp))
    driver = start_chromium(profile) if at_start else None
    proc, url = start_cockpit(data, tmp / f"cockpit-{name}.log")
    up = time.perf_counter()
    try:
        driver = driver or start_chromium(profile)
        loads = []
        for _ in range(REPEATS):
            waited = round(time.perf_counter() - up, 3)
            loads.append({**load_once(driver, url + url_path, css),
                          "server_up_before_s": waited})
            up = float("inf")  # only the first load's wait is meaningful
        return loads
    finally:
        if driver is not None:
            driver.quit()
        stop(proc)


def load_seconds(data: Path) -> list[float]:
    """The server's load of the nightly run (scores, lake rows, money, the list's texts), timed
    here on the same data: twice, the first with a cold import."""
    from cockpit.data import scores_days
    from cockpit.state import load_world
    from shipdelay.settings import Settings

    settings = Settings(data_dir=data)
    day = scores_days(settings.scores_dir)[-1]
    out = []
    for _ in range(2):
        start = time.perf_counter()
        load_world(settings, day)
        out.append(round(time.perf_counter() - start, 3))
    return out


def static_reference(tmp: Path) -> list[dict]:
    from tests.integration.browser import start_chromium

    page = tmp / "static.html"
    page.write_text(STATIC_PAGE.format(rows="".join(
        f"<tr><td>S{i:05d}</td><td>{i * 7 % 100}</td></tr>" for i in range(25))))
    driver = start_chromium(Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp)))
    try:
        return [load_once(driver, page.as_uri(), "#static-table td") for _ in range(REPEATS)]
    finally:
        driver.quit()


def _summary(loads: list[dict]) -> dict:
    warm = loads[1:]
    return {"cold": loads[0], "warm_median_s": statistics.median(x["shown_s"] for x in warm),
            "warm_server_callback_median_s": statistics.median(
                x["server_callback_s"] or 0 for x in warm),
            "warm_callback_sent_median_s": statistics.median(
                x["callback_sent_s"] or 0 for x in warm),
            "warm_browser_after_answer_median_s": statistics.median(
                x["shown_s"] - (x["callback_sent_s"] or 0) - (x["server_callback_s"] or 0)
                for x in warm),
            "loads": loads}


def run(quick: bool) -> list[dict]:
    sys.path.insert(0, str(ROOT))  # the tests' world helpers and browser driver
    from tests.integration.browser import _chromium

    if _chromium() is None:
        raise RuntimeError("headless Chromium is missing: run 'make browser' (as root)")
    size = QUICK if quick else FULL
    data_src = world()
    with scratch_dir("shipdelay-bench-cockpit-") as tmp:
        data = tmp / "data"
        data.mkdir()
        (data / "lake").symlink_to((data_src / "lake").resolve())
        originals, ship_id = write_scores(data, data / "lake", size)
        print(f"   {size:,} shipments in flight ({originals:,} simulated, the rest copies)",
              flush=True)
        now = _summary(series(data, "/", "#risk-table td[data-dash-column='shipment_id']",
                              tmp, "now"))
        ship = _summary(series(data, f"/shipment/{ship_id}", "#shipment-reasons li", tmp,
                               "shipment"))
        now_start = series(data, "/", "#risk-table td[data-dash-column='shipment_id']", tmp,
                           "now-start", at_start=True)[0]
        ship_start = series(data, f"/shipment/{ship_id}", "#shipment-reasons li", tmp,
                            "shipment-start", at_start=True)[0]
        loading = load_seconds(data)
        ref = _summary(static_reference(tmp))
    facts = {"in_flight": size, "simulated_in_flight": originals, "shipment_id": ship_id,
             "repeats": REPEATS, "load_avg_1m_after": round(os.getloadavg()[0], 2)}
    cmd = f"{SHIPDELAY} cockpit --port <free> + headless Chromium (benchmarks/bench_cockpit.py)"
    applies = not quick
    ref_cold, ref_warm = ref["cold"]["shown_s"], ref["warm_median_s"]

    def reference(value: float, cold: bool) -> dict:
        base = ref_cold if cold else ref_warm
        return {"name": f"static HTML file in the same Chromium, {'cold' if cold else 'warm'}",
                "value": base, "unit": "s", "ratio": round(value / base, 1) if base else None}

    rows = []
    for page, result in (("now", now), ("shipment", ship)):
        cold = result["cold"]["shown_s"]
        rows.append(row(f"cockpit_{page}_first_render_cold", cold, "s",
                        target=("<=", TARGET_S), target_applies=applies,
                        reference=reference(cold, True), measured_command=cmd,
                        split=result["cold"], **facts))
        warm = result["warm_median_s"]
        rows.append(row(f"cockpit_{page}_first_render_warm", warm, "s",
                        target=("<=", TARGET_S), target_applies=applies,
                        reference=reference(warm, False), measured_command=cmd,
                        server_callback_median_s=result["warm_server_callback_median_s"],
                        callback_sent_median_s=result["warm_callback_sent_median_s"],
                        browser_after_answer_median_s=round(
                            result["warm_browser_after_answer_median_s"], 3),
                        loads=result["loads"], **facts))
    for page, first in (("now", now_start), ("shipment", ship_start)):
        rows.append(row(f"cockpit_{page}_first_render_at_start", first["shown_s"], "s",
                        target=("<=", TARGET_S), target_applies=applies,
                        reference=reference(first["shown_s"], True), measured_command=cmd,
                        split=first, **facts))
    rows.append(row("cockpit_nightly_run_load", loading[0], "s", measured_command=(
        "cockpit.state.load_world in the benchmark's process (benchmarks/bench_cockpit.py)"),
        loads_s=loading, **facts))
    return rows
