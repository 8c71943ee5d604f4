"""The champion in BentoML's model store, so that `bentoml build` makes a self-contained Bento.

`export_champion` copies the bundle of the registry version an alias points at (native LightGBM
boosters, the calibrator, the feature spec, the note model: files, nothing pickled) into a
BentoML model named like the registered model, labelled with the MLflow version and run it
came from. Exporting the same version again creates nothing. `bentofile.yaml` names that model
(alias `champion`), so the Bento carries it.

The service loads from the BentoML store only when `SHIPDELAY_MODEL_SOURCE=bentoml` (set in the
Bento's image by `bentofile.yaml`): `BentoModelHolder` serves the exported model as it is, with
no registry to reach and no alias to follow. By default (`mlflow`) the service follows the
registry's champion alias (`serving.model_holder.ModelHolder`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from registry.loader import CHAMPION, NoChampionError, alias_version, bundle_folder
from registry.store import MODEL_NAME, client, safe_uri
from serving.compiled_cache import MemoryLedger
from serving.model_holder import ModelHolder
from shipdelay.settings import Settings
from training.bundle import Bundle

log = logging.getLogger(__name__)

BENTO_MODEL = MODEL_NAME  # the BentoML model's name: the registered model's
BENTO_ALIAS = "champion"  # what bentofile.yaml calls it inside a Bento
SOURCES = ("mlflow", "bentoml")  # SHIPDELAY_MODEL_SOURCE
_SKIPPED = {"source_run.txt"}  # the registry cache's own bookkeeping


@dataclass(frozen=True)
class Exported:
    tag: str  # the BentoML model, name:version
    version: str  # the MLflow model version it holds
    created: bool  # False: that version was exported before


def exported(version: str, run_id: str):
    """The BentoML model already holding MLflow version `version` of run `run_id`, or None."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        models = bentoml.models.list(BENTO_MODEL)
    except NotFound:  # none of that name yet
        return None
    for model in models:
        labels = model.info.labels
        if labels.get("mlflow_version") == version and labels.get("mlflow_run") == run_id:
            return model
    return None


def export_champion(settings: Settings, alias: str = CHAMPION) -> Exported:
    """Copy the bundle of the version `alias` points at into BentoML's model store (the one
    BENTOML_HOME names, default ~/bentoml). Raises NoChampionError without that alias."""
    import bentoml

    version = alias_version(settings, alias)
    if version is None:
        raise NoChampionError(f"no version of model {MODEL_NAME!r} has the alias {alias!r} in "
                              f"the registry at {safe_uri(settings.tracking_uri)}; train and "
                              "promote a model first")
    c = client(settings)
    mv = c.get_model_version(MODEL_NAME, version)
    run_id = mv.tags.get("run_id") or mv.run_id
    found = exported(version, run_id)
    if found is not None:
        return Exported(str(found.tag), version, created=False)
    folder = bundle_folder(settings, c, mv)
    bundle = Bundle.load(folder, version=version)  # refuse to export what would not load
    labels = {"mlflow_model": MODEL_NAME, "mlflow_version": version, "mlflow_run": run_id,
              "alias": alias}
    metadata = {"feature_service": bundle.spec.service, "inputs": len(bundle.spec.inputs),
                "tracking_uri": safe_uri(settings.tracking_uri)}
    with bentoml.models.create(BENTO_MODEL, labels=labels, metadata=metadata) as model:
        shutil.copytree(folder, model.path, dirs_exist_ok=True,
                        ignore=lambda _dir, names: [n for n in names if n in _SKIPPED])
    return Exported(str(model.tag), version, created=True)


def stored_model():
    """The BentoML model the service serves: the Bento's `champion` (bentofile.yaml's alias,
    resolved to the exact tag when the Bento was built), else the newest exported one."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(BENTO_ALIAS)
    except NotFound:
        return bentoml.models.get(f"{BENTO_MODEL}:latest")


def _version_of(model) -> str:
    return model.info.labels.get("mlflow_version") or str(model.tag.version)


class BentoModelHolder(ModelHolder):
    """A `ModelHolder` serving the model exported to BentoML's store: the one version it holds,
    labelled with its MLflow version, loaded once; compiled trees are trusted only when
    compiled by this process (no registry keeps their digests)."""

    def _wanted_version(self) -> str | None:
        from bentoml.exceptions import NotFound

        try:
            model = stored_model()
        except NotFound:
            log.error("no model %r in BentoML's model store: run `shipdelay export-bento`",
                      BENTO_MODEL)
            return None
        self._stored = model
        return _version_of(model)

    def _load_bundle(self) -> Bundle:
        return Bundle.load(self._stored.path, version=_version_of(self._stored))

    def _ledger(self, version: str):
        return MemoryLedger()


def holder_class(source: str) -> type[ModelHolder]:
    """The holder for SHIPDELAY_MODEL_SOURCE `source`."""
    return BentoModelHolder if source == "bentoml" else ModelHolder
