"""A readable summary of a simulated world, for the terminal."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from shipdelay.world.simulate import SimSummary


def _rates(title: str, counts: dict) -> Table:
    table = Table("", "delivered", "late", title=title)
    for key in sorted(counts):
        late, total = counts[key]
        table.add_row(key, f"{total:,}", f"{late / max(total, 1):.1%}")
    return table


def print_summary(summary: SimSummary, lake: Path, console: Console) -> None:
    console.print(
        f"[bold]World written to {lake}[/bold] (now = {summary.now:%Y-%m-%d %H:%M} UTC)\n"
        f"  {summary.shipments:,} shipments, {summary.legs:,} legs, {summary.events:,} tracking "
        f"events, {summary.rejects:,} malformed records in rejects\n"
        f"  {summary.delivered:,} delivered ({summary.late_rate:.1%} late), "
        f"{summary.in_flight:,} in flight at now; {summary.ceiling_snapshots:,} ceiling snapshots")
    console.print(_rates("late rate by main mode", summary.late_by_mode))
    console.print(_rates("late rate by service level", summary.late_by_level))
