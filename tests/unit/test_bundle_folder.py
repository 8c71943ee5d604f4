"""Two processes loading the same model version at once: neither removes the folder the other
reads (the second download finds the bundle already in place and keeps it)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from registry import loader
from shipdelay.settings import Settings


class _RacingClient:
    """Downloads a bundle; during the download another "process" puts the same bundle in place."""

    def __init__(self, other: callable):
        self.other = other

    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        folder = Path(dst) / path
        folder.mkdir(parents=True)
        (folder / "classifier.txt").write_text("tree")
        self.other()
        return str(folder)


def test_a_lost_race_keeps_the_folder_the_winner_placed(tmp_path):
    settings = Settings(data_dir=tmp_path)
    mv = SimpleNamespace(version="3", tags={"run_id": "run-a"}, run_id="run-a")
    target = loader.cache_dir(settings, "3")

    def winner() -> None:  # the other process finishes first and starts reading its folder
        target.mkdir(parents=True)
        (target / "classifier.txt").write_text("tree")
        (target / loader._SOURCE_FILE).write_text("run-a")

    reading = None

    def race() -> None:
        nonlocal reading
        winner()
        reading = (target / "classifier.txt").stat().st_ino

    got = loader.bundle_folder(settings, _RacingClient(race), mv)
    assert got == target
    assert (target / "classifier.txt").stat().st_ino == reading  # the winner's file, untouched
    assert [p.name for p in target.parent.iterdir()] == ["3"]  # no staging left behind


def test_a_stale_bundle_from_another_run_is_replaced(tmp_path):
    settings = Settings(data_dir=tmp_path)
    target = loader.cache_dir(settings, "3")
    target.mkdir(parents=True)
    (target / loader._SOURCE_FILE).write_text("run-old")
    mv = SimpleNamespace(version="3", tags={"run_id": "run-new"}, run_id="run-new")
    got = loader.bundle_folder(settings, _RacingClient(lambda: None), mv)
    assert (got / loader._SOURCE_FILE).read_text() == "run-new"
    assert (got / "classifier.txt").exists()
    assert [p.name for p in target.parent.iterdir()] == ["3"]
