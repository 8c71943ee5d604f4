"""A plan of milestones that branches goes the whole way: `shipdelay ingest` (consolidations'
feeds_leg, planned handling steps, scans of handling steps, an unlabelled leg event mapped by
its hub and an unknown leg rejected) -> `features build` -> `train` -> `score-batch`. The
seeded signal is a handling step's slip (the hand-over to the final leg's carrier), and the
model learns it where no transport scan shows it yet."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import offline as off
from features.store import offline_dir
from shipdelay.cli import app
from shipdelay.lake import Lake
from shipdelay.settings import get_settings
from tests.integration.handling_made import UNKNOWN_LEG_EVENT, delivery

warnings.filterwarnings("ignore", category=DeprecationWarning)

runner = CliRunner()
ORDER = ("hubs", "shipments", "legs", "milestone_plans", "events", "outcomes")


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("handling")
    files = delivery(root / "files")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIPDELAY_DATA_DIR", str(root / "data"))
        from training import model

        mp.setitem(model.CLASSIFIER_PARAMS, "num_threads", 1)
        mp.setitem(model.QUANTILE_PARAMS, "num_threads", 1)
        get_settings.cache_clear()
        out = {kind: _cli("ingest", str(files[kind]), "--kind", kind) for kind in ORDER}
        out["features"] = _cli("features", "build")
        out["train"] = _cli("train")
        settings = get_settings()
        from training.train import current_split

        yield {"settings": settings, "out": out, "split": current_split(settings),
               "lake": Lake(settings.lake_dir),
               "truth": pd.read_csv(files["truth"]).set_index("shipment_id")}
    get_settings.cache_clear()


def test_plans_import_and_unknown_legs_are_rejected(pipeline):
    for kind in ("legs", "milestone_plans", "outcomes"):
        assert " 0 rejected" in pipeline["out"][kind].replace("\n", " "), pipeline["out"][kind]
    lake = pipeline["lake"]
    rejects = lake.read("rejects")
    rejects = rejects[rejects["table"] == "tracking_events"]
    assert len(rejects) == 1 and UNKNOWN_LEG_EVENT in rejects["raw"].iloc[0]
    assert rejects["reason"].iloc[0].startswith("leg_index: shipment 'S0000' has no leg 5")
    events = lake.read("tracking_events")
    assert events["leg_index"].notna().sum() == events["event_type"].isin(
        ["departed", "arrived", "checked_in", "handed_over", "delivered"]).sum()  # mapped
    legs = lake.read("legs")
    merged = legs[legs["feeds_leg"].notna()]
    assert len(merged) == pipeline["truth"]["consolidation"].sum()


def test_the_profile_holds_the_graph_and_the_handling_plan(pipeline):
    profile = off.read_view(offline_dir(pipeline["settings"]), "shipment_profile")
    profile = profile.set_index("shipment_id").loc[pipeline["truth"].index]
    consol = pipeline["truth"]["consolidation"].to_numpy()
    feeds = profile["plan_feeds"].map(tuple)
    assert (feeds[consol] == (2.0, 2.0, -1.0)).all()
    assert (feeds[~consol] == (1.0, -1.0)).all()
    steps = profile["plan_steps"].map(len) // 2  # received, collected, 2 per leg
    assert (steps.to_numpy() == 2 + 2 * profile["n_legs"].to_numpy()).all()


def test_the_handling_slip_is_a_feature_and_the_model_learns_it(pipeline):
    split = pipeline["split"]
    frame = pd.concat([split.train, split.valid, split.test])
    final = (frame["n_legs"] - 1).astype(int).astype(str)
    handed = frame["milestone"].astype(str).eq("handed_over:" + final)
    assert handed.sum() > 100
    delay = pipeline["truth"].loc[frame.loc[handed, "shipment_id"], "handover_delay_h"]
    # at the hand-over, its slip is the latest slip against plan (within the scans' noise)
    assert np.allclose(frame.loc[handed, "last_slip_h"], delay.to_numpy(), atol=1.0)

    from registry.loader import load_by_alias
    from training.evaluate import classification_metrics

    bundle = load_by_alias(pipeline["settings"], "challenger")
    rows = pd.concat([split.valid, split.test])
    rows = rows[rows["milestone"].astype(str).eq(
        "handed_over:" + (rows["n_legs"] - 1).astype(int).astype(str))]
    p = bundle.p_late(bundle.spec.matrix(rows))
    # no transport scan of the final leg yet: only the hand-over's slip tells the late ones
    assert classification_metrics(rows["is_late"].to_numpy(float), p)["roc_auc"] > 0.85


def test_in_flight_consolidations_are_scored(pipeline):
    _cli("promote")
    from features.tables import lake_now
    from serving.batch import in_flight, read_scores

    lake = pipeline["lake"]
    now = lake_now(lake)
    flying = in_flight(lake, now)["shipment_id"].astype(str)
    assert pipeline["truth"].loc[flying, "consolidation"].any()
    _cli("score-batch", "--as-of", now.isoformat())
    scores = read_scores(pipeline["settings"])
    assert set(flying) <= set(scores["shipment_id"])
    assert scores["p_late"].between(0, 1).all()
