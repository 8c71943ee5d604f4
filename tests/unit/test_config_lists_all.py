"""`shipdelay config` shows every environment variable the product reads: each SHIPDELAY_* name
found in the product's source (a grep, independent of the list the command prints) is a row of
the settings table or of the serving table, and the serving table lists nothing the code no
longer mentions, with the defaults the code applies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipdelay.cli import app
from shipdelay.env_vars import ENV_VARS, UNSET, by_name

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("shipdelay", "features", "training", "registry", "serving", "monitoring", "cockpit")
NAME = re.compile(r"\bSHIPDELAY_[A-Z0-9_]*[A-Z0-9]\b")
LIST_FILE = ROOT / "shipdelay" / "env_vars.py"


def mentioned(skip: Path | None = None) -> dict[str, Path]:
    """Every complete SHIPDELAY_* name in the product's Python source, with one file naming
    it (prefixes such as SHIPDELAY_SERVE_* and <SETTING> placeholders are not names)."""
    found: dict[str, Path] = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path != skip:
                for name in NAME.findall(path.read_text()):
                    found.setdefault(name, path)
    return found


def config_output(env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, ["config"], env={"COLUMNS": "400", **(env or {})})
    assert result.exit_code == 0, result.output
    return result.output


def rows(output: str, title: str) -> dict[str, list[str]]:
    """The rows of the table titled `title...`: first cell -> all cells."""
    out, inside = {}, False
    for line in output.splitlines():
        if line.strip().startswith(title):
            inside = True
        elif inside and line.startswith("└"):
            break
        elif inside and line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            out[cells[0]] = cells
    assert out, f"no table '{title}' in:\n{output}"
    return out


def test_every_variable_the_code_mentions_is_shown(data_dir):
    output = config_output()
    settings = rows(output, "shipdelay settings")
    serving = rows(output, "serving")
    names = mentioned()
    assert len(names) > 20  # the grep finds the product's names
    missing = {name: str(path.relative_to(ROOT)) for name, path in names.items()
               if name[len("SHIPDELAY_"):].lower() not in settings and name not in serving}
    assert not missing, f"add these to shipdelay/env_vars.py (or make them settings): {missing}"


def test_the_serving_table_lists_only_variables_the_code_reads():
    elsewhere = mentioned(skip=LIST_FILE)
    stale = [v.name for v in ENV_VARS if v.name not in elsewhere]
    assert not stale, f"listed but read nowhere: {stale}"
    assert len(by_name()) == len(ENV_VARS)  # no name twice


def test_the_serving_table_shows_the_current_value(data_dir):
    serving = rows(config_output({"SHIPDELAY_SERVE_CPUS": "0",
                                  "SHIPDELAY_SERVE_REASONS_FROM": "0.25"}), "serving")
    assert serving["SHIPDELAY_SERVE_CPUS"][1:3] == ["0", UNSET]
    assert serving["SHIPDELAY_SERVE_REASONS_FROM"][1:3] == ["0.25", "0.6"]
    assert serving["SHIPDELAY_MAX_BODY_BYTES"][1:3] == [UNSET, "1000000"]
    assert all(cells[3] for cells in serving.values())  # every row says what it means


@pytest.mark.parametrize("name", ["SHIPDELAY_MODEL_REFRESH_SECONDS", "SHIPDELAY_MAX_FEATURE_AGE_H",
                                  "SHIPDELAY_MAX_BODY_BYTES", "SHIPDELAY_SERVE_REASONS_FROM",
                                  "SHIPDELAY_SERVE_REASONS_SECONDS",
                                  "SHIPDELAY_SERVE_REASONS_MAX_AGE_S",
                                  "SHIPDELAY_SERVE_CACHE_SECONDS", "SHIPDELAY_SERVE_CPUS",
                                  "SHIPDELAY_SERVE_GC_THRESHOLD",
                                  "SHIPDELAY_SERVE_KEEPALIVE_REQUESTS",
                                  "SHIPDELAY_SERVE_AS_OF", "SHIPDELAY_MODEL_SOURCE"])
def test_listed_defaults_are_what_the_service_applies(name, monkeypatch):
    """With every listed variable unset, the options the service reads hold the listed
    default."""
    from serving.options import ServeOptions

    for var in ENV_VARS:
        monkeypatch.delenv(var.name, raising=False)
    options = ServeOptions.from_env()
    field = {"SHIPDELAY_MODEL_REFRESH_SECONDS": "refresh_seconds",
             "SHIPDELAY_MAX_FEATURE_AGE_H": "max_feature_age_h",
             "SHIPDELAY_MAX_BODY_BYTES": "max_body_bytes",
             "SHIPDELAY_SERVE_REASONS_FROM": "reasons_from",
             "SHIPDELAY_SERVE_REASONS_SECONDS": "reasons_seconds",
             "SHIPDELAY_SERVE_REASONS_MAX_AGE_S": "reasons_max_age_s",
             "SHIPDELAY_SERVE_CACHE_SECONDS": "cache_seconds", "SHIPDELAY_SERVE_CPUS": "cpus",
             "SHIPDELAY_SERVE_GC_THRESHOLD": "gc_threshold",
             "SHIPDELAY_SERVE_KEEPALIVE_REQUESTS": "keepalive_requests",
             "SHIPDELAY_SERVE_AS_OF": "as_of", "SHIPDELAY_MODEL_SOURCE": "model_source"}[name]
    applied = getattr(options, field)
    listed = by_name()[name].default
    if listed == UNSET:
        assert applied is None
    elif isinstance(applied, tuple):
        assert applied == tuple(int(p) for p in listed.split(","))
    elif isinstance(applied, str):
        assert applied == listed
    else:
        assert applied == float(listed)


def test_other_listed_defaults_match_their_modules(monkeypatch):
    from serving import compiled_trees, demo, model_holder, start_watch, startup

    for var in ENV_VARS:
        monkeypatch.delenv(var.name, raising=False)
    assert by_name()[model_holder.THREADS_ENV].default == "1"
    assert compiled_trees.mode() == "background" and by_name()[compiled_trees.ENV].default == "1"
    assert {startup.STATUS_ENV, startup.DELAY_ENV} <= set(by_name())
    assert float(by_name()[demo.PATIENCE_ENV].default) == start_watch.PATIENCE_S
    assert float(by_name()[demo.LIMIT_ENV].default) == start_watch.LIMIT_S
