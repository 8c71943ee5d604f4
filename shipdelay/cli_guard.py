"""What reaches the terminal from a `shipdelay` command: its own output and, when it fails, one
sentence; never a library's warnings, progress bars or colour codes, never a traceback.

`GuardedGroup` is the CLI's click group. While a command runs (`route_library_output`),
`sys.stdout` and `sys.stderr` write to the command log (`<data_dir>/logs/shipdelay.log`), as do
Python warnings and every logger; the CLI's consoles keep the real terminal. So whatever MLflow,
Feast, pandas, LightGBM, BentoML or alembic print, log or warn lands in the log, and the terminal
shows only what shipdelay means to say. Processes a command starts inherit the real terminal.

When a command fails, `GuardedGroup.invoke` prints one sentence: for an expected failure
(`Failure`, or a known library error from `explain`) what is wrong and what to run next, exit
code 1 (2 for invalid settings); for anything else the error's first line and where its
traceback was written, exit code 1. Bad arguments stay click's: exit code 2, naming the option.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.file_proxy import FileProxy
from typer.core import TyperGroup

from shipdelay.masking import mask_text

log = logging.getLogger("shipdelay.cli")

LOG_NAME = "shipdelay.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that log every request or file at INFO: kept to warnings.
_CHATTY = ("httpx", "httpcore", "urllib3", "numba", "matplotlib", "PIL", "asyncio", "filelock")


class Failure(Exception):
    """An expected failure: its message is one sentence saying what is wrong and what to do
    next. The CLI prints it and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class _LazyLog(FileProxy):
    """A text stream appending to the command log, opened at the first write (a command that
    says nothing leaves no file behind).

    It is a rich `FileProxy` only so that rich's live displays (the progress bars and status
    lines) leave it in place: on a terminal they otherwise swap `sys.stdout` and `sys.stderr`
    for proxies that print whatever libraries write above the bar, on the terminal."""

    def __init__(self, path: Path):  # FileProxy's own state is not used
        self.path = path
        self._file = None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._open(), name)

    @property
    def rich_proxied_file(self):
        return self

    def _open(self):
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", buffering=1, encoding="utf-8",  # noqa: SIM115
                              errors="replace")
        return self._file

    def write(self, text: str) -> int:
        self._open().write(text)
        return len(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def fileno(self) -> int:
        return self._open().fileno()

    @property
    def buffer(self):
        return self._open().buffer

    @property
    def encoding(self) -> str:
        return "utf-8"

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def log_path(data_dir: Path | None = None) -> Path:
    """The command log: under the data folder, or the temporary folder when the settings cannot
    be read or the data folder cannot be written."""
    if data_dir is None:
        try:
            from shipdelay.settings import get_settings

            data_dir = get_settings().data_dir
        except Exception:  # noqa: BLE001 - invalid settings: the failure itself says so
            data_dir = None
    if data_dir is not None:
        folder = Path(data_dir).absolute() / "logs"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder / LOG_NAME
        except OSError:
            pass
    return Path(tempfile.gettempdir()) / f"shipdelay-{os.getuid()}.log"


class _Routing:
    """The streams, console files and logging state one command changed, to put them back."""

    def __init__(self, consoles: list[Console]):
        self.consoles = consoles
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.files = [c._file for c in consoles]  # None: the console follows sys.stdout
        self.path = log_path()
        self.stream = _LazyLog(self.path)
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter(_FORMAT))
        root = logging.getLogger()
        self.level = root.level

    def start(self) -> None:
        # Before the libraries are imported: MLflow then installs no handler of its own on
        # stderr (its messages reach the root logger), and keeps its download bars off.
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
        for console in self.consoles:  # the CLI's own output keeps the terminal
            console.file = self.stderr if console.stderr else self.stdout
        root = logging.getLogger()
        root.addHandler(self.handler)
        root.setLevel(logging.INFO)
        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.captureWarnings(True)
        sys.stdout = sys.stderr = self.stream

    def stop(self) -> None:
        sys.stdout, sys.stderr = self.stdout, self.stderr
        logging.captureWarnings(False)
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.level)
        for console, file in zip(self.consoles, self.files, strict=True):
            console.file = file
        self.stream.flush()


_current: _Routing | None = None


def route_library_output(ctx: typer.Context, *consoles: Console) -> None:
    """From now until `ctx` closes, everything but `consoles` writes to the command log."""
    global _current
    routing = _Routing(list(consoles))
    routing.start()
    _current = routing

    def stop() -> None:
        global _current
        routing.stop()
        _current = None

    ctx.call_on_close(stop)


def terminal(stderr: bool = False):
    """The real terminal stream while a command runs (its output is routed to the log)."""
    if _current is not None:
        return _current.stderr if stderr else _current.stdout
    return sys.stderr if stderr else sys.stdout


def current_log() -> Path:
    """The command log of the running command (or where it would be)."""
    return _current.path if _current is not None else log_path()


# -- failures ------------------------------------------------------------------------------------
def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _is(err: BaseException, *names: str) -> bool:
    """Whether `err`'s class or a base is one of `names` ("package:ClassName"), without
    importing the packages."""
    for cls in type(err).__mro__:
        root = cls.__module__.split(".")[0]
        if f"{root}:{cls.__name__}" in names:
            return True
    return False


_UNREACHABLE = ("redis:ConnectionError", "redis:TimeoutError", "sqlalchemy:OperationalError",
                "psycopg:OperationalError", "psycopg2:OperationalError", "httpx:ConnectError",
                "httpx:ConnectTimeout", "requests:ConnectionError",
                "builtins:ConnectionRefusedError", "socket:gaierror")


def first_line(err: BaseException, limit: int = 200) -> str:
    """`err`'s message, first line only, secrets masked, at most `limit` characters."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = mask_text(re.sub(r"^\([\w.]+\)\s*", "", text))  # SQLAlchemy's "(psycopg.Error) "
    return text if len(text) <= limit else text[:limit - 3] + "..."


def sentence(text: str) -> str:
    """`text` as a sentence: capital first letter, one full stop at the end."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


NEXT_STEP_AFTER = {
    "registry:NoChampionError":
        "No model is champion yet: run `shipdelay train`, then `shipdelay promote`.",
    "registry:NoChallengerError":
        "There is no challenger to promote: run `shipdelay train` first.",
    "registry:NoPreviousChampionError":
        "There is nothing to roll back to: no earlier champion is recorded (rollback gives the "
        "champion back to the version that the last promotion replaced).",
}


def explain(err: BaseException) -> tuple[str, int] | None:
    """The sentence and exit code for an expected failure, or None for an unexpected one."""
    for e in _chain(err):
        if isinstance(e, Failure):
            return sentence(mask_text(str(e))), e.exit_code
        for name, text in NEXT_STEP_AFTER.items():
            if _is(e, name):
                return text, 1
        if _is(e, "feast:FeatureServiceNotFoundException", "feast:FeatureViewNotFoundException"):
            what = f"The feature store is not built ({first_line(e)})"
            return f"{what}: run `shipdelay features build` first.", 1
        if _is(e, "features:FeatureServiceMismatch"):
            what = f"The model does not fit the feature store ({first_line(e)})"
            return f"{what}: train and promote a model on it.", 1
        if _is(e, "serving:NoKafka", "serving:BatchError", "shipdelay:EncryptionKeyError"):
            return sentence(first_line(e, 400)), 1
        if (_is(e, "duckdb:InvalidInputException", "_duckdb:InvalidInputException")
                and "is encrypted" in str(e)):  # DuckDB 2 raises from its `_duckdb` module
            return ("A Parquet file is encrypted and encryption is off in this process: set "
                    "SHIPDELAY_ENCRYPTION=true and SHIPDELAY_ENCRYPTION_KEY_FILE to the key file "
                    "it was written with."), 1
        if _is(e, "pydantic_core:ValidationError") and getattr(e, "title", "") == "Settings":
            return _invalid_settings(e), 2
        if _is(e, *_UNREACHABLE):
            what = f"A store or service could not be reached ({first_line(e)})"
            return f"{what}: check that it runs and that `shipdelay config` shows its address.", 1
    return None


def _invalid_settings(err) -> str:
    problems = "; ".join(
        f"SHIPDELAY_{str(e['loc'][0]).upper()}: {e['msg']}" if e.get("loc") else e["msg"]
        for e in err.errors())
    return f"The settings are invalid ({mask_text(problems)}): fix the environment or .env."


def report(err: BaseException, command: str | None) -> int:
    """Print one sentence about `err` on the terminal, its traceback to the command log; the
    exit code."""
    path = current_log()
    what = f"shipdelay {command}" if command else "shipdelay"
    known = explain(err)
    if known is not None:
        sentence, code = known
        log.warning("%s failed: %s", what, sentence, exc_info=err)
    else:
        code = 1
        log.error("%s failed unexpectedly", what, exc_info=err)
        sentence = (f"{what} stopped on an unexpected error ({type(err).__name__}: "
                    f"{first_line(err)}); the full traceback is in {path}.")
    if _current is None:  # failed before the routing started: the log has no handler yet
        _write_traceback(path, err)
    Console(file=terminal(stderr=True), highlight=False, soft_wrap=True).print(
        sentence, style="red", markup=False)
    return code


def _write_traceback(path: Path, err: BaseException) -> None:
    import traceback

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(traceback.format_exception(err)))
    except OSError:
        pass


ARGS_KEY = "shipdelay.args"


class GuardedGroup(TyperGroup):
    """The CLI's group: a failing command ends with one sentence (`report`), never a
    traceback. Click's own exits (bad arguments: 2, typer.Exit, Ctrl-C) pass unchanged."""

    def invoke(self, ctx):
        # what follows the group on the command line; click empties ctx.args before the
        # group's callback runs, which must know whether a subcommand only asks for --help
        ctx.meta[ARGS_KEY] = (*getattr(ctx, "_protected_args", ()), *ctx.args)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException, KeyboardInterrupt,
                EOFError, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - the one place every failure is answered
            raise typer.Exit(report(err, ctx.invoked_subcommand)) from None
