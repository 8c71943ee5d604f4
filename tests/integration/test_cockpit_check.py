"""`shipdelay cockpit --check`, as `make demo` ends: the cockpit served on a free port, its Now
page fetched once over HTTP with the API key, stopped; the figures it prints are the scores
table's, and without a nightly run it says so in one sentence, exit 0 both times."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from cockpit.smoke import check
from shipdelay.cli import app
from shipdelay.parquet_io import read_frame
from shipdelay.settings import get_settings
from tests.integration.test_cockpit_world import cockpit_settings

KEY = "a-cockpit-check-key"


@pytest.fixture(scope="module")
def settings(small_world, tmp_path_factory):
    lake, _ = small_world
    return cockpit_settings(tmp_path_factory.mktemp("cockpit-check") / "data", lake,
                            api_key=SecretStr(KEY))


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=5)
    except httpx.ConnectError:
        return True
    return False


def test_check_reports_the_scores_counts_and_stops(settings):
    scores = read_frame(next(settings.scores_dir.glob("run_date=*")))
    got = check(settings)
    assert got.problem is None
    assert got.in_flight == len(scores)
    assert got.high == int((scores["risk_band"] == "high").sum())
    assert got.summary() == (f"Cockpit: {got.url} ({len(scores):,} shipments in flight, "
                             f"{got.high:,} high)")
    assert _refused(got.url)  # stopped: nothing listens there any more


def test_check_command_prints_and_ends_by_itself(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("SHIPDELAY_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SHIPDELAY_API_KEY", KEY)
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["cockpit", "--check"], prog_name="shipdelay")
        said = " ".join(done.output.split())
        assert done.exit_code == 0, done.output
        assert "shipments in flight" in said and "shipdelay cockpit" in said
        assert "Traceback" not in said
        # no nightly run yet: the page's own sentence, still exit 0
        monkeypatch.setenv("SHIPDELAY_DATA_DIR", str(tmp_path / "empty"))
        get_settings.cache_clear()
        empty = CliRunner().invoke(app, ["cockpit", "--check"], prog_name="shipdelay")
        assert empty.exit_code == 0, empty.output
        assert "answered:" in empty.output and "Traceback" not in empty.output
    finally:
        get_settings.cache_clear()
