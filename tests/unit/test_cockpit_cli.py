"""`shipdelay cockpit` refuses a bad penalties file in one sentence, before serving anything."""

from __future__ import annotations

from typer.testing import CliRunner

from shipdelay.cli import app


def test_a_bad_penalties_file_stops_the_cockpit_with_exit_2(data_dir, tmp_path, monkeypatch):
    bad = tmp_path / "penalties.csv"
    bad.write_text("who,amount\nA,3\n")
    monkeypatch.setenv("SHIPDELAY_PENALTIES_FILE", str(bad))
    result = CliRunner().invoke(app, ["cockpit", "--port", "1"], prog_name="shipdelay")
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "needs the columns customer_id or service_level" in said
    assert "unset SHIPDELAY_PENALTIES_FILE" in said and "Traceback" not in said
