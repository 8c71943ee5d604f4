"""What `shipdelay monitor` answers: alarms, counts and where its reports went.

The retraining loop reads only this: `MonitorSummary.should_retrain` is True when an alarm of
kind "drift" or "performance" fired. Other kinds ("volume", "freshness", "calibration",
"data") are reported and exported as metrics but do not by themselves ask for a new model:
a feed that stops is an incident for people, not for training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

RETRAIN_KINDS = ("drift", "performance")


@dataclass(frozen=True)
class Alarm:
    """One threshold crossed: `slice` is e.g. "overall", "carrier=C007" or "path=stream"."""

    kind: str  # drift | performance | calibration | volume | freshness | data
    slice: str
    metric: str
    value: float
    threshold: float
    message: str


@dataclass
class MonitorSummary:
    """The result of one monitoring run."""

    as_of: str
    days: int
    alarms: list[Alarm] = field(default_factory=list)
    judged: int = 0  # predictions whose outcome is known (after de-duplication)
    logged: int = 0  # predictions in the window (after de-duplication)
    json_path: Path | None = None
    html_path: Path | None = None
    headline: dict[str, float] = field(default_factory=dict)  # the numbers /metrics exports
    counts: dict[str, int] = field(default_factory=dict)  # bad input and housekeeping counts

    @property
    def should_retrain(self) -> bool:
        return any(a.kind in RETRAIN_KINDS for a in self.alarms)

    @property
    def retrain_reasons(self) -> list[str]:
        """The messages of the alarms that ask for a new model (for a promotion's record)."""
        return [a.message for a in self.alarms if a.kind in RETRAIN_KINDS]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["json_path"] = str(self.json_path) if self.json_path else None
        out["html_path"] = str(self.html_path) if self.html_path else None
        out["should_retrain"] = self.should_retrain
        return out

    @classmethod
    def from_dict(cls, data: dict) -> MonitorSummary:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["alarms"] = [Alarm(**a) for a in data.get("alarms", [])]
        for key in ("json_path", "html_path"):
            fields[key] = Path(data[key]) if data.get(key) else None
        return cls(**fields)

    @classmethod
    def read(cls, path: Path) -> MonitorSummary:
        return cls.from_dict(json.loads(Path(path).read_text()))
