"""The stream checks each event's leg against the shipment's plan as ingest does: a leg event
without a leg_index gets the one leg its hub tells and is folded there; one whose leg the plan
does not know is a dead letter with the reason, and never moves leg 0."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from features.schema import SHIPMENT_PROGRESS
from serving import stream_batch
from shipdelay.contract import STR
from tests.unit.test_plan_progress import consolidation
from tests.unit.test_transforms import make_events


class FakeStore:
    """What `stream_batch.process` reads: profiles (plans), progress (none yet), the stream's
    own state (nothing applied) and the lake's hubs (all known)."""

    def __init__(self, plans: list[dict]):
        self.plans = pd.DataFrame(plans).set_index("shipment_id").assign(found=True)
        self.online = self

    def profiles(self, ids):
        known = self.plans.reindex(ids)
        return known.assign(found=known["found"].eq(True))

    def read(self, view, ids):
        assert view == "shipment_progress"
        cols = {c: np.nan for c in SHIPMENT_PROGRESS}
        return pd.DataFrame({"shipment_id": ids, "found": False, **cols})

    def read_state(self, ids):
        return pd.DataFrame({"shipment_id": ids, "applied": [[] for _ in ids],
                             "p_late": np.nan})

    def known_hubs(self, hubs):
        return np.ones(len(hubs), bool)


def test_unknown_legs_are_dead_letters_and_unlabelled_ones_are_mapped():
    rows = [("e1", "S1", "departed", None, 2.5, 2.6),   # at B: leg 1's departure hub
            ("e2", "S1", "departed", 7, 2.5, 2.6),      # the plan has legs 0..2
            ("e3", "S1", "arrived", None, 13.0, 13.1),  # at C: legs 0 and 1 both end there
            ("e4", "S9", "departed", 0, 2.5, 2.6),      # no such shipment
            ("e5", "S1", "delivered", None, 40.0, 40.1)]  # delivered: reported, not scored
    events = make_events(rows)
    events["hub_id"] = pd.array(["B", "B", "C", "A", "D"], dtype=STR)
    events["partition"], events["offset"] = 0, np.arange(len(events))
    events["produced_ms"] = 0
    result = stream_batch.process(FakeStore([consolidation("S1")]),
                                  SimpleNamespace(version="none"), events)

    reasons = dict(zip(result.dead["offset"], result.dead["reason"], strict=True))
    assert reasons == {1: "leg_index: shipment 'S1' has no leg 7 (its plan has legs 0..2)",
                       2: "leg_index: missing, and 2 legs of shipment 'S1' arrive at hub 'C'",
                       3: "unknown shipment"}
    assert result.counts["applied"] == 2
    mask = int(result.latest["milestone_mask"].iloc[0])
    assert mask == (1 << 2) | (1 << 42)  # departed leg 1 and delivered: nothing on leg 0
