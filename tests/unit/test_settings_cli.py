"""Settings resolve from profile and environment; the CLI answers bad arguments with exit 2."""

from __future__ import annotations

import re

from pydantic import SecretStr
from typer.testing import CliRunner

from shipdelay.cli import app
from shipdelay.settings import Settings

runner = CliRunner()


def test_local_profile_keeps_everything_under_data(monkeypatch):
    monkeypatch.delenv("SHIPDELAY_PROFILE", raising=False)
    s = Settings()
    assert s.profile == "local" and s.online_store == "sqlite" and s.kafka_bootstrap is None
    assert s.tracking_uri.startswith("sqlite:///") and s.tracking_uri.endswith("data/mlflow.db")


def test_scale_profile_and_environment_overrides(monkeypatch):
    monkeypatch.setenv("SHIPDELAY_PROFILE", "scale")
    monkeypatch.setenv("SHIPDELAY_REDIS_URL", "redis://cache:6380/1")
    s = Settings()
    assert s.online_store == "redis" and s.redis_url == "redis://cache:6380/1"
    assert s.kafka_bootstrap and s.postgres_url and s.spark_master.startswith("spark://")


def test_secrets_are_masked():
    s = Settings(api_key=SecretStr("topsecret"), postgres_url="postgresql://app:pw@db:5432/x",
                 mlflow_tracking_uri="postgresql://ml:pw2@db:5432/mlflow",
                 kafka_security={"sasl.password": "hunter2", "security.protocol": "SASL_SSL"})
    shown = str(s.masked())
    assert "topsecret" not in shown and "pw@" not in shown and "hunter2" not in shown
    assert "pw2" not in shown
    assert "postgresql://app:********@db:5432/x" in shown and "SASL_SSL" in shown


def test_config_command_prints_masked_settings(monkeypatch, data_dir):
    monkeypatch.setenv("SHIPDELAY_API_KEY", "abc123secret")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0
    assert "abc123secret" not in result.output and "********" in result.output
    flat = re.sub(r"[\s│]", "", result.output)  # long values fold across table rows
    assert str(data_dir) in flat


def test_every_command_and_option_has_help():
    import click
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{name} --{param.name}"


def test_bad_arguments_exit_2(data_dir):
    for args in (["simulate", "--shipments", "many"], ["simulate", "--shipments", "0"],
                 ["simulate", "--start", "2025-13-45"], ["simulate", "--days", "-3"],
                 ["ingest", "nope.csv", "--kind", "events"], ["no-such-command"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
    assert "not a date" in runner.invoke(app, ["simulate", "--start", "2025-13-45"]).output


def test_ingest_rejects_unknown_kind(tmp_path, data_dir):
    f = tmp_path / "x.csv"
    f.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["ingest", str(f), "--kind", "parcels"])
    assert result.exit_code == 2 and "--kind" in result.output


def test_simulate_and_ingest_from_the_cli(tmp_path, data_dir):
    result = runner.invoke(app, ["simulate", "--shipments", "300", "--days", "20",
                                 "--ceiling-shipments", "0", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "300 shipments" in result.output and "late rate by main mode" in result.output
    bad = tmp_path / "hubs.csv"
    bad.write_text("hub_id,name,kind,city,country,region,latitude,longitude\n"
                   "X-1,Somewhere,depot,x,XX,europe,10,10\n"
                   "X-2,Nowhere,spaceport,x,XX,europe,10,10\n")
    result = runner.invoke(app, ["ingest", str(bad), "--kind", "hubs"])
    assert result.exit_code == 0, result.output
    assert "1 accepted" in result.output and "1 rejected" in result.output
    assert "kind" in result.output  # the reason names the field
