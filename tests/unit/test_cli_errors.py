"""What users read when a command cannot do its job: one sentence saying what is wrong and what
to run next, exit code 1 (2 for bad arguments, naming the option); never a traceback, a library
warning or a colour code. Each command runs as `shipdelay` does, in its own process, on an empty
data folder.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
SHIPDELAY = [sys.executable, "-c", "from shipdelay.cli import app; app()"]
ANSI = re.compile(r"\x1b\[")
RUN_FIRST = "`shipdelay simulate`"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], data_dir: Path, timeout: float = 180, **env) -> tuple[int, str]:
    """Run `shipdelay args` on `data_dir`, output to a pipe (as in a log or CI), with no colour
    forced; returns the exit code and stdout + stderr."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "CLICOLOR_FORCE")}
    clean.update(SHIPDELAY_DATA_DIR=str(data_dir), **env)
    done = subprocess.run(SHIPDELAY + args, check=False, cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def assert_clean(output: str) -> None:
    assert "Traceback" not in output, output
    assert not ANSI.search(output), output
    assert "Warning" not in output and "warn" not in output.lower(), output


def assert_one_sentence(output: str, *needles: str) -> None:
    assert_clean(output)
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].endswith("."), output
    for needle in needles:
        assert needle in lines[0], (needle, output)


# command, what the sentence must name
EMPTY_FOLDER = [
    (["train"], [RUN_FIRST, "shipdelay features build"]),
    (["tune", "--trials", "1"], [RUN_FIRST]),
    (["promote"], [RUN_FIRST]),
    (["rollback"], ["nothing to roll back to"]),
    (["ask"], [RUN_FIRST]),
    (["replay", "--as-fast-as-possible"], [RUN_FIRST]),
    (["stream", "--idle-exit", "1"], [RUN_FIRST]),
    (["stream-demo"], [RUN_FIRST]),
]


@pytest.mark.parametrize(("args", "named"), EMPTY_FOLDER, ids=[" ".join(a) for a, _ in EMPTY_FOLDER])
def test_a_command_before_its_inputs_exist_says_what_to_run(tmp_path, args, named):
    code, output = run(args, tmp_path / "data")
    assert code == 1, output
    assert_one_sentence(output, *named)


def test_serve_on_an_empty_folder_exits_at_once_instead_of_restarting(tmp_path):
    # BentoML restarts a worker that fails to start, forever: the checks come before it starts,
    # so the command ends (the timeout would fail the test otherwise) with the step to run.
    code, output = run(["serve", "--port", str(_port())], tmp_path / "data", timeout=120)
    assert code == 1, output
    assert_one_sentence(output, RUN_FIRST)


def test_serve_before_features_build_names_the_missing_step(tmp_path, small_world):
    data = tmp_path / "data"
    data.mkdir()
    (data / "lake").symlink_to(small_world[0].root.resolve())
    code, output = run(["serve", "--port", str(_port())], data, timeout=120)
    assert code == 1, output
    assert_one_sentence(output, "shipdelay features build")


def test_bad_serve_arguments_exit_2_naming_the_option(tmp_path):
    code, output = run(["serve", "--as-of", "garbage"], tmp_path / "data")
    assert code == 2, output
    assert_clean(output)
    assert "--as-of" in output and "garbage" in output
    code, output = run(["serve"], tmp_path / "data", SHIPDELAY_SERVE_GC_THRESHOLD="often")
    assert code == 2, output
    assert_one_sentence(output, "SHIPDELAY_SERVE_GC_THRESHOLD")


def test_invalid_settings_are_named(tmp_path):
    code, output = run(["train"], tmp_path / "data", SHIPDELAY_PROFILE="huge")
    assert code == 2, output
    assert_one_sentence(output, "SHIPDELAY_PROFILE")


def test_an_unexpected_error_prints_where_its_traceback_went(monkeypatch, data_dir):
    from shipdelay.cli import app
    from shipdelay.settings import Settings

    def broken(self):
        raise KeyError("boom-0xdead")

    monkeypatch.setattr(Settings, "masked", broken)
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 1
    log = data_dir / "logs" / "shipdelay.log"
    assert_one_sentence(result.output, "shipdelay config", "KeyError", "boom-0xdead", str(log))
    text = log.read_text()
    assert "Traceback" in text and "boom-0xdead" in text and "def broken" not in result.output


def test_library_output_goes_to_the_log_not_the_terminal(monkeypatch, data_dir):
    """What libraries print, warn or log while a command runs lands in the command log."""
    import logging
    import warnings

    from shipdelay.cli import app
    from shipdelay.settings import Settings

    real = Settings.masked

    def chatty(self):
        print("\x1b[1mMaterializing 7 feature views\x1b[0m")  # as Feast prints, in colour
        print("Successfully registered model", file=sys.stderr)  # as MLflow prints
        warnings.warn("noload is deprecated", DeprecationWarning, stacklevel=1)
        warnings.warn("inferred schema has integers", UserWarning, stacklevel=1)
        logging.getLogger("alembic.runtime.migration").warning("Running upgrade")
        return real(self)

    monkeypatch.setattr(Settings, "masked", chatty)
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert "shipdelay settings" in result.output  # the command's own output stays
    for noise in ("Materializing", "Successfully registered", "deprecated", "inferred schema",
                  "Running upgrade"):
        assert noise not in result.output
    log = (data_dir / "logs" / "shipdelay.log").read_text()
    for noise in ("Materializing", "Successfully registered", "noload is deprecated",
                  "inferred schema", "Running upgrade"):
        assert noise in log, noise
    from shipdelay.cli_guard import _LazyLog

    assert not isinstance(sys.stdout, _LazyLog) and not isinstance(sys.stderr, _LazyLog)


def test_an_unreachable_store_is_named_in_one_sentence_without_its_password():
    import redis
    import sqlalchemy.exc

    from shipdelay.cli_guard import explain

    refused = ConnectionRefusedError('connection to server at "db", port 5432 failed for '
                                     "postgresql://app:s3cret@db:5432/mlflow")
    database = sqlalchemy.exc.OperationalError("SELECT 1", {}, refused)
    wrapped = RuntimeError("registry call failed")  # as MLflow wraps it
    wrapped.__cause__ = database
    for err in (wrapped, redis.exceptions.ConnectionError("Error 111 connecting to cache:6379")):
        sentence, code = explain(err)
        assert code == 1 and "could not be reached" in sentence and "shipdelay config" in sentence
        assert "\n" not in sentence and "s3cret" not in sentence
    assert "port 5432" in explain(wrapped)[0] and "cache:6379" in sentence
    assert explain(ValueError("a bug")) is None  # not expected: reported as unexpected


def test_every_command_prints_its_help():
    """`shipdelay <command> --help` reaches the terminal: the command log must not swallow it."""
    import typer
    from typer.testing import CliRunner

    from shipdelay.cli import app

    group = typer.main.get_command(app)
    paths = []
    for name, command in group.commands.items():
        subs = getattr(command, "commands", None)
        paths += [[name, sub] for sub in subs] if subs else [[name]]
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], prog_name="shipdelay")
        assert result.exit_code == 0, path
        assert f"Usage: shipdelay {' '.join(path)}" in " ".join(result.output.split()), path
