"""The production-shape compose file (deploy/compose.yaml) stays true to the product: it parses,
holds every part (Redis, Kafka, PostgreSQL, Spark, the service, the stream scorer, the
cockpit), every shipdelay command it runs is a command of the CLI with options the command
has, and every SHIPDELAY_ variable it sets is a setting. It is not started here (no Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
import yaml

from shipdelay.cli import app
from shipdelay.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _shipdelay_commands(compose: dict) -> dict[str, list[str]]:
    return {name: service["command"] for name, service in compose["services"].items()
            if isinstance(service.get("command"), list) and service["command"][0] == "shipdelay"}


def check_command(args: list[str]) -> None:
    """Raise AssertionError unless `shipdelay args` names a real (sub)command and gives it only
    options it has, each with a value exactly when it takes one."""
    command = typer.main.get_command(app)  # typer's own click: compared by shape, not class
    words = list(args)
    while hasattr(command, "commands"):
        assert words, f"{args}: a group needs a subcommand"
        name = words.pop(0)
        assert name in command.commands, f"{args}: no command {name!r}"
        command = command.commands[name]
    options = {opt: p for p in command.params if p.param_type_name == "option"
               for opt in (*p.opts, *p.secondary_opts)}
    positional = [p for p in command.params if p.param_type_name == "argument"]
    loose = []
    while words:
        word = words.pop(0)
        if not word.startswith("--"):
            loose.append(word)
            continue
        name, _, inline = word.partition("=")
        assert name in options, f"{args}: {command.name} has no option {name}"
        option = options[name]
        if option.is_flag:
            assert not inline, f"{args}: {name} takes no value"
        elif not inline:
            assert words and not words[0].startswith("--"), f"{args}: {name} needs a value"
            value = words.pop(0)
            low, high = getattr(option, "min", None), getattr(option, "max", None)
            if low is not None or high is not None:  # a bounded number: in its bounds
                number = float(value)
                assert (low is None or number >= low) and (high is None or number <= high), (
                    f"{args}: {name} {value} is out of its range")
    assert len(loose) <= len(positional), f"{args}: unexpected {loose}"


def test_the_file_holds_every_part(compose):
    services = set(compose["services"])
    assert {"redis", "kafka", "postgres", "spark-master", "spark-worker", "service", "stream",
            "cockpit"} <= services
    commands = {tuple(c[1:2]) for c in _shipdelay_commands(compose).values()}
    assert {("serve",), ("stream",), ("cockpit",)} <= commands


def test_every_shipdelay_command_exists_with_its_options(compose):
    commands = _shipdelay_commands(compose)
    assert len(commands) >= 3
    for args in commands.values():
        check_command(args[1:])


def test_the_check_catches_what_the_cli_lacks():
    check_command(["serve", "--port", "3000", "--workers", "2"])
    for bad in (["serve", "--prot", "3000"], ["serve", "--port"], ["serve", "--port", "99999"],
                ["no-such-command"], ["features"], ["features", "roll", "--every"]):
        with pytest.raises(AssertionError):
            check_command(bad)


def test_every_shipdelay_variable_is_a_setting_of_the_scale_profile(compose):
    fields = {f"SHIPDELAY_{name.upper()}" for name in Settings.model_fields}
    seen = set()
    for service in compose["services"].values():
        for key in (service.get("environment") or {}):
            if key.startswith("SHIPDELAY_"):
                assert key in fields, f"{key} is not a setting"
                seen.add(key)
    assert "SHIPDELAY_POSTGRES_URL" in seen and "SHIPDELAY_REDIS_URL" in seen
    shipdelay = [s for s in compose["services"].values()
                 if isinstance(s.get("command"), list) and s["command"][0] == "shipdelay"]
    assert all(s["environment"]["SHIPDELAY_PROFILE"] == "scale" for s in shipdelay)
