"""The experiment notebook runs as a data scientist runs it (a Jupyter kernel, cell by cell,
opened from a folder that is not the project's) and promotes nothing: the aliases stay where
they were, its variant becomes a version without an alias. On a data folder without data it
stops with one sentence naming the command to run, and builds nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from registry.loader import CHAMPION, alias_version
from registry.register import CHALLENGER
from registry.store import MODEL_NAME, client
from shipdelay.settings import Settings

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "experiment.ipynb"
TIMEOUT_S = 1200  # per cell: the variant's training is the long one


def _run(data_dir: Path, cwd: Path, monkeypatch) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("SHIPDELAY_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def _aliases(settings: Settings) -> dict[str, str | None]:
    return {alias: alias_version(settings, alias) for alias in (CHAMPION, CHALLENGER)}


def test_the_notebook_moves_no_alias(trained, tmp_path, monkeypatch):
    source, _, report = trained
    root = tmp_path / "data"
    (root / "feast").mkdir(parents=True)
    shutil.copy2(source.data_dir / "mlflow.db", root / "mlflow.db")
    for name in ("online.db", "registry.db"):
        shutil.copy2(source.data_dir / "feast" / name, root / "feast" / name)
    (root / "feast" / "offline").symlink_to((source.data_dir / "feast" / "offline").resolve())
    (root / "lake").symlink_to(source.lake_dir.resolve())
    settings = Settings(data_dir=root)
    c = client(settings)
    c.set_registered_model_alias(MODEL_NAME, CHAMPION, report.version)
    before = _aliases(settings)
    versions = {mv.version for mv in c.search_model_versions(f"name='{MODEL_NAME}'")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    notebook = _run(root, elsewhere, monkeypatch)

    assert _aliases(settings) == before and before[CHAMPION] == report.version
    new = [mv for mv in c.search_model_versions(f"name='{MODEL_NAME}'")
           if mv.version not in versions]
    assert len(new) == 1 and not new[0].aliases  # the variant: registered, promotable by no one
    run = c.get_run(new[0].run_id)
    assert run.data.tags["mlflow.runName"] == "notebook-variant"
    assert run.data.params["classifier.num_leaves"] == "15"
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []))
    assert f"data folder: {root}" in outputs and "aliases unchanged" in outputs
    assert not (elsewhere / "data").exists()


def test_without_data_the_notebook_says_what_to_run(tmp_path, monkeypatch):
    empty = tmp_path / "empty" / "data"
    with pytest.raises(CellExecutionError) as failed:
        _run(empty, tmp_path, monkeypatch)
    message = str(failed.value)
    assert "shipdelay simulate" in message and str(empty) in message
    assert "Traceback (most recent call last)" not in message  # one sentence, no traceback
    assert not (empty / "lake").exists()  # nothing built quietly
