"""The cockpit's loaded world: the newest nightly scores joined once to the lake's context and the
money at stake, ranked and formatted for the Now list, with the lake's rows of the shipments in
flight for their pages; kept until a newer nightly run appears. The cockpit loads it when it
starts and looks for a newer one every minute in the background (a page also looks), so that
visitors seldom wait for a load. Fresh answers come from the service."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import pyarrow.compute as pc

from cockpit import data, inflight, money
from cockpit.listing import Listing
from cockpit.service import ask
from shipdelay.lake import Lake
from shipdelay.parquet_io import read_table
from shipdelay.settings import Settings

RELOAD_CHECK_S = 60.0


def lake_now(lake: Lake) -> pd.Timestamp | None:
    """The lake's "now": its newest tracking-event ingestion (in the newest day partition)."""
    files = lake.files("tracking_events")
    if not files:
        return None
    newest = max(f.parent.name for f in files)
    times = read_table([f for f in files if f.parent.name == newest], columns=["ingested_at"])
    value = pc.max(times["ingested_at"]).as_py()
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")


@dataclass
class World:
    """One nightly run, ready to show: `shipments` has the scores, the context and exposure."""

    run_date: str | None
    now: pd.Timestamp
    shipments: pd.DataFrame
    hubs: pd.DataFrame
    legs: pd.DataFrame  # the scored shipments' legs: shipment_id, to_hub, planned_arrival
    problem: str | None = None
    listing: Listing | None = None  # the Now list, row i = shipments row i (ranked)
    lake_rows: inflight.InFlight | None = None  # facts, legs and events of those in flight
    position: dict = field(default_factory=dict)  # shipment_id -> row of `shipments`


@dataclass
class Cockpit:
    """Settings, the loaded world (reloaded when the nightly run changes) and the service."""

    settings: Settings
    service_url: str | None = None
    _world: World | None = None
    _history: tuple[str | None, pd.DataFrame] | None = None
    last_service_version: str | None = None  # the model version of the service's last answer
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api_key(self) -> str | None:
        key = self.settings.api_key
        return key.get_secret_value() if key is not None else None

    def world(self) -> World:
        days = data.scores_days(self.settings.scores_dir)
        newest = days[-1].isoformat() if days else None
        with self._lock:
            if self._world is None or self._world.run_date != newest:
                self._world = load_world(self.settings, days[-1] if days else None)
            return self._world

    def keep_loaded(self, every_s: float = RELOAD_CHECK_S) -> threading.Thread:
        """Load the newest nightly run now and whenever a newer one appears (looked for every
        `every_s`), in the background: the first visitor after the cockpit starts, or after a
        nightly run lands, does not wait for it (a page asked during a load waits for its end).
        A failure is left for the next page to say."""
        def follow():
            while True:
                with contextlib.suppress(Exception):  # the page that asks next reports it
                    self.world()
                time.sleep(every_s)

        thread = threading.Thread(target=follow, name="cockpit-nightly-run", daemon=True)
        thread.start()
        return thread

    def history(self) -> pd.DataFrame:
        """The delivered shipments of the last weeks (`analytics.delivered`), kept per run."""
        from cockpit.analytics import delivered

        world = self.world()
        with self._lock:
            if self._history is None or self._history[0] != world.run_date:
                lake = Lake(self.settings.lake_dir)
                frame = (delivered(lake, world.hubs, money.Penalties.from_settings(self.settings),
                                   world.now) if lake.exists("outcomes") else pd.DataFrame())
                self._history = (world.run_date, frame)
            return self._history[1]

    def live(self, ids: list[str]) -> tuple[pd.DataFrame, str | None]:
        """The world's rows for `ids`, refreshed with the service's answers."""
        world = self.world()
        rows = world.shipments.iloc[[world.position[i] for i in ids if i in world.position]]
        rows = rows.reset_index(drop=True)
        answers, problem = ask(self.service_url, rows["shipment_id"].tolist(), self.api_key)
        versions = [a.get("model_version") for a in answers if a.get("ok")]
        if versions:
            self.last_service_version = versions[-1]
        fresh = data.apply_answers(rows, answers)
        fresh = money.exposure(fresh, money.Penalties.from_settings(self.settings))
        return fresh, problem


def load_world(settings: Settings, day: date | None) -> World:
    """The nightly scores of `day` with each shipment's context and exposure."""
    lake = Lake(settings.lake_dir)
    scores = data.latest_scores(settings.scores_dir)
    hubs = data.hub_names(lake) if lake.exists("hubs") else pd.DataFrame(
        columns=["hub_id", "label", "region", "latitude", "longitude"])
    now = lake_now(lake) if lake.exists("tracking_events") else None
    if now is None:
        now = (pd.to_datetime(scores["as_of"], utc=True).max() if len(scores)
               else pd.Timestamp.now(tz="UTC"))
    problem = None if len(scores) else ("no nightly scores yet: run `shipdelay score-batch` "
                                        "(or `make demo`)")
    legs = pd.DataFrame(columns=["shipment_id", "to_hub", "planned_arrival"])
    rows = None
    if len(scores) and lake.exists("shipments"):
        rows = inflight.read(lake, scores["shipment_id"].tolist(), now)
        frame = scores.merge(rows.context(), on="shipment_id", how="left")
        legs = rows.legs[["shipment_id", "leg_index", "to_hub", "planned_arrival"]]
        frame = frame.merge(data.hubs_ahead(legs, hubs, now), on="shipment_id", how="left")
    else:
        frame = scores.assign(customer_id=None, origin_hub=None, destination_hub=None,
                              service_level=None, promised_at=pd.NaT, current_hub=None)
    frame = money.exposure(frame, money.Penalties.from_settings(settings))
    frame = data.riskiest(frame, len(frame)).reset_index(drop=True)
    return World(day.isoformat() if day else None, now, frame, hubs, legs, problem,
                 Listing.build(frame, hubs, now), rows,
                 dict(zip(frame["shipment_id"], range(len(frame)))))
