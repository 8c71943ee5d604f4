"""What a command needs before it starts, checked first so that a missing step is named.

Each check raises `Failure` with one sentence naming the command that makes what is missing: a
lake (`shipdelay simulate` or `shipdelay ingest`), the feature store (`shipdelay features
build`), a challenger (`shipdelay train`), a champion (`shipdelay promote`). A service started
on an empty data folder would otherwise restart its worker forever; a training run would end in
a library's traceback.
"""

from __future__ import annotations

from shipdelay.cli_guard import Failure
from shipdelay.lake import Lake
from shipdelay.settings import Settings

SIMULATE_OR_INGEST = "`shipdelay simulate` (or bring data with `shipdelay ingest`)"


def need_lake(settings: Settings, *tables: str) -> None:
    """The lake holds `tables` (default: shipments)."""
    lake = Lake(settings.lake_dir)
    missing = [t for t in (tables or ("shipments",)) if not lake.exists(t)]
    if not missing:
        return
    if not lake.exists("shipments"):
        raise Failure(f"There is no lake at {settings.lake_dir} yet: run {SIMULATE_OR_INGEST} "
                      "first.")
    raise Failure(f"The lake at {settings.lake_dir} has no {' or '.join(missing)}: import them "
                  f"with `shipdelay ingest` (or run {SIMULATE_OR_INGEST}).")


def need_lake_for_features(settings: Settings) -> None:
    """A lake exists, said as the first step a command needing the feature store misses (a
    check of a folder: a command calls it before its heavy imports, so an empty data folder is
    named in half a second rather than after five)."""
    if not Lake(settings.lake_dir).exists("shipments"):
        raise Failure(f"There is no lake at {settings.lake_dir} yet: run "
                      f"{SIMULATE_OR_INGEST}, then `shipdelay features build`.")


def need_features(settings: Settings) -> None:
    """The feature store is built: its registry knows the FeatureService models are trained on.
    Without a lake there is no feature store either: said before Feast is even loaded."""
    need_lake_for_features(settings)
    from feast.errors import FeatureServiceNotFoundException

    from features.schema import FEATURE_SERVICE
    from features.store import get_store

    try:
        get_store(settings).get_feature_service(FEATURE_SERVICE)
    except FeatureServiceNotFoundException:
        raise Failure(f"The feature store under {settings.data_dir} is not built yet: run "
                      "`shipdelay features build` first.") from None


def need_challenger(settings: Settings) -> None:
    """A registered model waits for promotion (the alias challenger)."""
    from registry.loader import CHAMPION, alias_version
    from registry.register import CHALLENGER

    if alias_version(settings, CHALLENGER) is not None:
        return
    champion = alias_version(settings, CHAMPION)
    if champion is None:
        raise Failure("No model has been trained yet, so there is nothing to promote: run "
                      "`shipdelay train` first.")
    raise Failure(f"There is no challenger to promote (version {champion} is already the "
                  "champion): run `shipdelay train` for a new one.")


def need_champion(settings: Settings) -> None:
    """A model carries the alias champion."""
    from registry.loader import CHAMPION, alias_version
    from registry.register import CHALLENGER

    if alias_version(settings, CHAMPION) is not None:
        return
    challenger = alias_version(settings, CHALLENGER)
    if challenger is not None:
        raise Failure(f"No model is champion yet: run `shipdelay promote` (version {challenger} "
                      "waits as the challenger).")
    raise Failure("No model is champion yet: run `shipdelay train`, then `shipdelay promote`.")


def need_servable(settings: Settings) -> None:
    """What the prediction service needs: the feature store and a champion."""
    need_features(settings)
    need_champion(settings)
