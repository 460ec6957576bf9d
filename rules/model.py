"""Rule definitions: what to watch, the condition that fires, and how it must behave."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.telemetry import METRIC_NAME_PATTERN

RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class Severity(StrEnum):
    """How bad a firing rule is; maps onto work-order priority."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


PRIORITY_BY_SEVERITY = {Severity.INFO: "low", Severity.WARNING: "medium", Severity.CRITICAL: "high"}


class Comparison(StrEnum):
    """Which side of a threshold is bad."""

    ABOVE = "above"
    BELOW = "below"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Selector(_Frozen):
    """Which series a rule watches: one metric of one asset, a type, a site or tagged assets."""

    metric: str = Field(pattern=METRIC_NAME_PATTERN)
    asset_id: str | None = None
    asset_type: str | None = None
    site: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class Threshold(_Frozen):
    """A value above or below `threshold` is bad; it is good again past `clear` (hysteresis)."""

    kind: Literal["threshold"] = "threshold"
    comparison: Comparison
    threshold: float
    clear: float | None = None

    @model_validator(mode="after")
    def _clear_on_the_good_side(self) -> Threshold:
        _check_clear(self.comparison, self.threshold, self.clear)
        return self


class Band(_Frozen):
    """A value outside [low, high] is bad; it is good again inside [clear_low, clear_high]."""

    kind: Literal["outside"] = "outside"
    low: float
    high: float
    clear_low: float | None = None
    clear_high: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        _check_clear(Comparison.BELOW, self.low, self.clear_low)
        _check_clear(Comparison.ABOVE, self.high, self.clear_high)
        return self


class RateOfChange(_Frozen):
    """The change per second over `window` is above or below `threshold`."""

    kind: Literal["rate_of_change"] = "rate_of_change"
    comparison: Comparison
    threshold: float
    window: timedelta

    @model_validator(mode="after")
    def _positive_window(self) -> RateOfChange:
        _check_positive("window", self.window)
        return self


class Rolling(_Frozen):
    """The mean or maximum over `window` is past `threshold` (with optional hysteresis)."""

    kind: Literal["rolling"] = "rolling"
    aggregate: Literal["mean", "max"]
    comparison: Comparison
    threshold: float
    clear: float | None = None
    window: timedelta

    @model_validator(mode="after")
    def _valid(self) -> Rolling:
        _check_positive("window", self.window)
        _check_clear(self.comparison, self.threshold, self.clear)
        return self


class Trend(_Frozen):
    """A least-squares line over `window` crosses `threshold` within `horizon`.

    The line is fitted only once there are `min_points` readings spanning at least half
    of `window`; before that the condition is not bad.
    """

    kind: Literal["trend"] = "trend"
    comparison: Comparison
    threshold: float
    window: timedelta
    horizon: timedelta
    min_points: int = Field(default=5, ge=3)

    @model_validator(mode="after")
    def _positive(self) -> Trend:
        _check_positive("window", self.window)
        _check_positive("horizon", self.horizon)
        return self


class NoData(_Frozen):
    """No reading for `silence`; evaluated by a timer, not by messages."""

    kind: Literal["no_data"] = "no_data"
    silence: timedelta

    @model_validator(mode="after")
    def _positive(self) -> NoData:
        _check_positive("silence", self.silence)
        return self


Condition = Annotated[
    Threshold | Band | RateOfChange | Rolling | Trend | NoData, Field(discriminator="kind")
]


class Rule(_Frozen):
    """A watched series, a condition, and the timing that keeps it from flapping."""

    id: str = Field(pattern=RULE_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    selector: Selector
    condition: Condition
    severity: Severity = Severity.WARNING
    # The condition must hold this long before the rule fires (Prometheus's `for`).
    hold_for: timedelta = timedelta(0)
    # The condition must stay clear this long before the rule resolves.
    quiet_period: timedelta = timedelta(0)
    # A pending rule whose readings stop for longer than this starts over.
    max_gap: timedelta = timedelta(minutes=10)
    # Readings older than the newest seen by more than this are stored but change nothing.
    lateness: timedelta = timedelta(seconds=30)
    enabled: bool = True

    @model_validator(mode="after")
    def _durations(self) -> Rule:
        for name in ("hold_for", "quiet_period", "lateness"):
            value: timedelta = getattr(self, name)
            if value < timedelta(0):
                raise ValueError(f"{name} must not be negative, got {value}")
        _check_positive("max_gap", self.max_gap)
        return self


def _check_positive(name: str, value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"{name} must be positive, got {value}")


def _check_clear(comparison: Comparison, threshold: float, clear: float | None) -> None:
    if clear is None:
        return
    if comparison is Comparison.ABOVE and clear > threshold:
        raise ValueError(
            f"clear threshold {clear} is above the firing threshold {threshold}; for an "
            "'above' rule it must be at or below it, or the rule could never clear"
        )
    if comparison is Comparison.BELOW and clear < threshold:
        raise ValueError(
            f"clear threshold {clear} is below the firing threshold {threshold}; for a "
            "'below' rule it must be at or above it, or the rule could never clear"
        )
