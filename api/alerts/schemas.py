"""Models of alert rules and alerts."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.timestamps import UtcTimestamp
from devices.contract import METRICS_BY_NAME, District, Kind

# Far beyond any useful alert, and far within what the evaluator can look back from now() (a
# timedelta, a timestamp after 4713 BC): an unbounded window raised there and stopped every rule.
MAX_WINDOW_S: Final = 365 * 86_400


class Condition(StrEnum):
    ABOVE = "above"
    BELOW = "below"
    OFFLINE = "offline"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class RuleFields(BaseModel):
    """What a rule watches; ``above``/``below`` need kind, metric and threshold."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    condition: Condition
    kind: Kind | None = None
    metric: str | None = Field(default=None, examples=["pm2_5"])
    threshold: float | None = None
    window_s: float = Field(
        gt=0,
        le=MAX_WINDOW_S,
        description="how long the condition must hold (offline: time without a reading), in"
        " seconds, a year at most",
        examples=[900],
    )
    district: District | None = None
    device_id: str | None = None
    severity: Severity = Severity.WARNING
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> RuleFields:
        if self.condition is Condition.OFFLINE:
            if self.metric is not None or self.threshold is not None:
                raise ValueError("an offline rule has no metric and no threshold")
            return self
        if self.kind is None or self.metric is None or self.threshold is None:
            raise ValueError(f"an {self.condition.value} rule needs kind, metric and threshold")
        if self.metric not in METRICS_BY_NAME[self.kind]:
            raise ValueError(f"{self.metric!r} is not a {self.kind.value} metric")
        return self


class RuleCreate(RuleFields):
    pass


class RulePatch(BaseModel):
    """A partial update of the fields operators tune."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    threshold: float | None = None
    window_s: float | None = Field(default=None, gt=0, le=MAX_WINDOW_S)
    severity: Severity | None = None
    enabled: bool | None = None


class Rule(RuleFields):
    rule_id: int
    created_at: UtcTimestamp
    updated_at: UtcTimestamp


class RuleList(BaseModel):
    items: list[Rule]


class Alert(BaseModel):
    alert_id: int
    rule_id: int
    rule_name: str
    severity: Severity
    device_id: str
    state: AlertState
    value: float | None = Field(description="the metric's value when the alert opened")
    message: str
    opened_at: UtcTimestamp
    acknowledged_at: UtcTimestamp | None
    acknowledged_by: str | None
    resolved_at: UtcTimestamp | None
    updated_at: UtcTimestamp


class AlertList(BaseModel):
    items: list[Alert]
