"""What a notebook needs to work on the project's data wherever it is opened.

`notebook_settings()` reads Settings as the command line does in the project folder: the
environment first (`SHIPDELAY_*`), then the project's `.env`; a relative data folder (the
default `data`) is the project folder's, not the folder the notebook server started in.
`require(settings, ...)` checks what the notebook needs (a lake and its features, a champion)
and stops the notebook with one sentence naming the command to run, never by building data of
its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shipdelay.settings import Settings


def project_root() -> Path:
    """The project folder: the one holding pyproject.toml above this package (a source
    checkout), else the current folder (an installed package)."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def notebook_settings(root: Path | None = None) -> Settings:
    """Settings with the data folder made absolute against the project folder."""
    root = root or project_root()
    settings = Settings(_env_file=root / ".env")
    if not settings.data_dir.is_absolute():
        settings = settings.model_copy(update={"data_dir": (root / settings.data_dir).resolve()})
    return settings


class NotebookStop(Exception):
    """Stops a notebook cell with one sentence (IPython shows `_render_traceback_`'s lines
    instead of a traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def require(settings: Settings, *checks: Callable[[Settings], None]) -> None:
    """Run `shipdelay.preflight` checks (default: a lake with its feature store); the first that
    fails stops the notebook with its sentence."""
    from shipdelay.cli_guard import Failure
    from shipdelay.preflight import need_features, need_lake

    try:
        for check in checks or (need_lake, need_features):
            check(settings)
    except Failure as failure:
        raise NotebookStop(f"{failure} (Or set SHIPDELAY_DATA_DIR to another data folder.)"
                           ) from None
