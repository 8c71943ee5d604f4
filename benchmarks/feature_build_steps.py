"""Where a feature build spends its time and memory: `build_features` in this process, on the
data folder SHIPDELAY_DATA_DIR names (its lake simulated or imported before), with this
process's resident memory sampled every 50 ms; prints each step's wall time and peak, then the
whole. A check outside `run.py` (the `features` benchmark measures the command as a whole).

    SHIPDELAY_DATA_DIR=<data> .venv/bin/python benchmarks/feature_build_steps.py [--no-online]
"""

from __future__ import annotations

import argparse
import threading
import time
import warnings

import psutil

GIB = 2**30


class StepPeaks:
    """The resident memory's peak per named step, sampled in a background thread."""

    def __init__(self, every_s: float = 0.05):
        self.step, self.peaks, self._every = "starting", {}, every_s
        self._process = psutil.Process()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            rss = self._process.memory_info().rss
            self.peaks[self.step] = max(self.peaks.get(self.step, 0), rss)
            time.sleep(self._every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-online", action="store_true", help="skip the online load")
    args = parser.parse_args()
    peaks = StepPeaks()
    started = last = time.perf_counter()

    def on_step(name: str, done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if peaks.step != "starting":
            print(f"{peaks.step:34s} {now - last:7.1f} s  peak {peaks.peaks.get(peaks.step, 0) / GIB:5.2f} GiB",
                  flush=True)
        last, peaks.step = now, name

    from features.build import build_features
    from shipdelay.settings import get_settings

    settings = get_settings()
    warnings.filterwarnings("ignore")  # Feast's notices about its own API: not this measurement
    report = build_features(settings, on_step=on_step, online=not args.no_online)
    print(f"whole build {time.perf_counter() - started:.1f} s, peak "
          f"{max(peaks.peaks.values()) / GIB:.2f} GiB (memory budget "
          f"{settings.memory_budget_gb} GB); entities online {report.online_rows}")


if __name__ == "__main__":
    main()
