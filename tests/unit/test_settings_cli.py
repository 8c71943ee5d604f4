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
                   "X-2,Nowhere,depot,x,XX,europe,95,10\n")  # no such latitude
    result = runner.invoke(app, ["ingest", str(bad), "--kind", "hubs"])
    assert result.exit_code == 0, result.output
    assert "1 accepted" in result.output and "1 rejected" in result.output
    assert "latitude" in result.output  # the reason names the field


# (setting, value as an operator would write it, the secret in it, text that must stay visible)
SECRET_SHAPES = [
    ("postgres_url", "postgresql://app:S3cr3t-Pa55@db.internal:5432/shipdelay?sslmode=require",
     "S3cr3t-Pa55", "sslmode=require"),
    ("postgres_url", "postgresql://app@db.internal/shipdelay?password=qp-secret-1",
     "qp-secret-1", "app@db.internal"),
    ("redis_url", "rediss://default:r3d1s-pw@cache.internal:6380/0", "r3d1s-pw",
     "default:********@cache.internal"),
    ("redis_url", "redis://:only-pw-2@cache.internal:6379/0", "only-pw-2", "cache.internal"),
    ("mlflow_tracking_uri", "https://mlflow.example.com/?token=mlf_tok_9f8e7d&workspace=ops",
     "mlf_tok_9f8e7d", "workspace=ops"),
    ("mlflow_tracking_uri", "http://mlflow.internal:5000/?access_token=at-123456",
     "at-123456", "mlflow.internal:5000"),
    ("mlflow_tracking_uri", "https://acct.blob.core.windows.net/k?sv=2022-11-02&sp=r&sig=AbC%2Bsig%3D",
     "AbC%2Bsig%3D", "sv=2022-11-02"),
    ("mlflow_tracking_uri", "https://s3.amazonaws.com/b/k?X-Amz-Signature=deadbeefcafe&X-Amz-Date=1",
     "deadbeefcafe", "X-Amz-Date=1"),
    ("redis_url", "https://s3.amazonaws.com/b/k?X-Amz-Security-Token=FQoGZXIvYXdz",
     "FQoGZXIvYXdz", "X-Amz-Security-Token="),
    ("mlflow_tracking_uri", "https://vault.example.com/v1/transit?X-Vault-Token=hvs.CAESIabc",
     "hvs.CAESIabc", "vault.example.com"),
    ("postgres_url", "https://maps.example.com/geo?key=AIzaSyA-api-key&lang=en",
     "AIzaSyA-api-key", "lang=en"),
]
KAFKA_SECURITY = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "svc-shipdelay",
    "sasl.password": "kafka-pw-1",
    "ssl.key.password": "keypass-2",
    "ssl.key.pem": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----",
    "ssl.keystore.password": "ks-pw-4",
    "ssl.key.location": "/etc/kafka/client.key",
    "sasl.oauthbearer.client.id": "shipdelay-client",
    "sasl.oauthbearer.client.secret": "oauth-cs-3",
    "sasl.oauthbearer.config": "principal=svc clientSecret=oauth-cfg-5",
    "sasl.jaas.config": 'PlainLoginModule required username="svc" password="jaas-pw-6";',
}
KAFKA_SECRETS = ["kafka-pw-1", "keypass-2", "MIIEvQIBADANBgkq", "ks-pw-4", "oauth-cs-3",
                 "oauth-cfg-5", "jaas-pw-6"]
KAFKA_VISIBLE = ["SASL_SSL", "PLAIN", "svc-shipdelay", "/etc/kafka/client.key",
                 "shipdelay-client", "principal=svc"]


def test_every_secret_shape_is_masked():
    for field, value, secret, visible in SECRET_SHAPES:
        shown = str(Settings(**{field: value}).masked())
        assert secret not in shown, (field, value, shown)
        assert visible in shown, (field, value, shown)
    shown = str(Settings(kafka_security=KAFKA_SECURITY, api_key=SecretStr("hvs.kms-tok-7")).masked())
    for secret in [*KAFKA_SECRETS, "hvs.kms-tok-7"]:
        assert secret not in shown, (secret, shown)
    for visible in KAFKA_VISIBLE:
        assert visible in shown, (visible, shown)
    plain = Settings(data_dir="/srv/data", redis_url="redis://cache:6379/0?ssl_cert_reqs=none")
    shown = plain.masked()  # values without secrets are printed exactly as they are
    assert shown["tracking_uri"] == plain.tracking_uri == "sqlite:////srv/data/mlflow.db"
    assert shown["redis_url"] == plain.redis_url


def test_names_are_judged_word_by_word():
    from shipdelay.masking import is_secret_name

    secret = ["sasl.password", "ssl.key.password", "ssl.key.pem", "ssl.keystore.key",
              "sasl.oauthbearer.client.secret", "api_key", "apiKey", "X-Api-Key", "AccountKey",
              "access_key", "aws_secret_access_key", "SharedAccessSignature", "sig", "token",
              "X-Amz-Security-Token", "private_key_pem", "privateKey", "credentials"]
    plain = ["security.protocol", "ssl.key.location", "ssl.keystore.location", "sasl.username",
             "sasl.oauthbearer.client.id", "key.serializer", "encryption_key_id",
             "encryption_key_file", "sslmode", "workspace", "bootstrap.servers", "sv", "monkey"]
    assert [n for n in secret if not is_secret_name(n)] == []
    assert [n for n in plain if is_secret_name(n)] == []


def test_config_command_never_prints_a_secret(monkeypatch, data_dir):
    import json

    secrets = ["abc123secret", *KAFKA_SECRETS]
    monkeypatch.setenv("SHIPDELAY_API_KEY", "abc123secret")
    monkeypatch.setenv("SHIPDELAY_KAFKA_SECURITY", json.dumps(KAFKA_SECURITY))
    for field, value, secret, _visible in SECRET_SHAPES:
        monkeypatch.setenv(f"SHIPDELAY_{field.upper()}", value)
        result = runner.invoke(app, ["config"])
        assert result.exit_code == 0, result.output
        flat = re.sub(r"[\s│]", "", result.output)  # long values fold across table rows
        for hidden in (secret, *secrets):
            assert hidden not in flat, (field, hidden)
    assert "SASL_SSL" in flat and "********" in flat
