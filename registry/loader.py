"""Loading a model by alias: the one way every scoring path (API, stream, nightly batch) gets a
Bundle, so they all serve the same version.

An alias resolves to a model version; the version's run holds the `bundle/` folder logged by
`registry.register.log_bundle`. Versions are immutable, so a downloaded bundle is cached under
`<data_dir>/models/<version>/` and reloading (a worker restart, a second process) reads local files
only. The cache records the run it came from, so a data folder reused against a different
registry is never served a stale bundle.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from registry.register import BUNDLE_PATH, COMPILED_TAG_PREFIX
from registry.store import MODEL_NAME, client, safe_uri
from shipdelay.settings import Settings
from training.bundle import Bundle

CHAMPION = "champion"
_SOURCE_FILE = "source_run.txt"


class NoChampionError(LookupError):
    """The alias (by default "champion") points at no model version: nothing was promoted yet."""


def version_by_alias(c: MlflowClient, alias: str) -> ModelVersion | None:
    # Read the alias map rather than asking for the alias: stores report a missing alias with
    # different error codes, while a missing model is uniformly RESOURCE_DOES_NOT_EXIST. Any
    # other failure (database down, permissions) propagates.
    try:
        aliases = c.get_registered_model(MODEL_NAME).aliases
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = aliases.get(alias)
    return None if version is None else c.get_model_version(MODEL_NAME, str(version))


def alias_version(settings: Settings, alias: str) -> str | None:
    """The version number the alias points at, or None if the alias (or the model) is absent."""
    mv = version_by_alias(client(settings), alias)
    return None if mv is None else str(mv.version)


def run_of(mv: ModelVersion) -> str:
    """The run that logged a version's bundle (registration tags it; MLflow also records it)."""
    run_id = mv.tags.get("run_id") or mv.run_id
    if not run_id:
        raise LookupError(f"{MODEL_NAME} version {mv.version} records no run, so no bundle")
    return run_id


def cache_dir(settings: Settings, version: str) -> Path:
    return settings.data_dir / "models" / str(version)


def _holds(source: Path, run_id: str) -> bool:
    try:
        return source.read_text() == run_id
    except FileNotFoundError:
        return False


def bundle_folder(settings: Settings, c: MlflowClient, mv: ModelVersion) -> Path:
    """The local folder holding version `mv`'s bundle, downloaded once."""
    run_id = run_of(mv)
    target = cache_dir(settings, mv.version)
    source = target / _SOURCE_FILE
    if _holds(source, run_id):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Download beside the target and swap it in with one rename, so a concurrent loader never
    # sees a half-written folder.
    staging = Path(tempfile.mkdtemp(prefix=f".{mv.version}-", dir=target.parent))
    try:
        folder = Path(c.download_artifacts(run_id, BUNDLE_PATH, str(staging)))
        (folder / _SOURCE_FILE).write_text(run_id)
        if _holds(source, run_id):
            return target  # another process put the same bundle in place meanwhile
        if target.exists():
            # Stale (another registry's run): moved aside in one rename, never deleted in place,
            # so a process still reading the folder it found is not cut off mid-read.
            os.replace(target, staging / "stale")
        try:
            os.replace(folder, target)
        except OSError:
            if not _holds(source, run_id):
                raise  # not a lost race with an identical download: a real failure
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_by_alias(settings: Settings, alias: str = CHAMPION) -> Bundle:
    """The Bundle of the version the alias points at, with `bundle.version` set to its number.

    Raises NoChampionError (a LookupError) when the alias does not exist."""
    c = client(settings)
    mv = version_by_alias(c, alias)
    if mv is None:
        raise NoChampionError(
            f"no version of model {MODEL_NAME!r} has the alias {alias!r} in the registry at "
            f"{safe_uri(settings.tracking_uri)}; register a model and run promote first")
    return Bundle.load(bundle_folder(settings, c, mv), version=str(mv.version))


def compiled_hashes(settings: Settings, version: str) -> dict[str, str]:
    """The SHA-256 recorded for each compiled object of model version `version`, by key
    (booster and machine key; `registry.register.record_compiled_hash`)."""
    tags = client(settings).get_model_version(MODEL_NAME, str(version)).tags
    return {k[len(COMPILED_TAG_PREFIX):]: v for k, v in tags.items()
            if k.startswith(COMPILED_TAG_PREFIX)}
