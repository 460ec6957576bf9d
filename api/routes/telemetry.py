"""Routes that read an asset's telemetry: `/api/v1/assets/{id}/telemetry`."""

from __future__ import annotations

import re
from datetime import UTC, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BeforeValidator, WithJsonSchema

from api.dependencies import Services, Viewer
from api.problems import problem_responses
from api.routes.assets import AssetIdPath
from api.schemas import LatestTelemetryRead, TelemetryPointRead, TelemetryRead

router = APIRouter(prefix="/assets", tags=["telemetry"])

DEFAULT_WINDOW = timedelta(hours=1)
MAX_BUCKETS = 10_000
DEFAULT_POINTS = 10_000
MAX_POINTS = 100_000

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_SHORT = re.compile(r"^(\d{1,9})(ms|s|m|h|d|w)$")
# Years and months have no fixed length, so ISO-8601 durations stop at weeks and days.
_ISO = re.compile(
    r"^P(?!$)(?:(?P<w>\d{1,9})W)?(?:(?P<d>\d{1,9})D)?"
    r"(?:T(?!$)(?:(?P<h>\d{1,9})H)?(?:(?P<m>\d{1,9})M)?(?:(?P<s>\d{1,9}(?:\.\d{1,6})?)S)?)?$"
)


def parse_every(value: Any) -> timedelta:
    """Parse an interval such as `30s`, `5m`, `1h`, `1d` or ISO-8601 `PT5M`; refuse zero."""
    try:
        every = _parse_interval(value)
    except OverflowError as exc:
        raise ValueError("the interval is too long") from exc
    if every <= timedelta(0):
        raise ValueError("the interval must be longer than zero")
    return every


def _parse_interval(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        every = value
    elif isinstance(value, str) and (short := _SHORT.match(value.strip())):
        every = int(short.group(1)) * _UNITS[short.group(2)]
    elif isinstance(value, str) and (iso := _ISO.match(value.strip().upper())):
        parts = {key: float(number) for key, number in iso.groupdict(default="0").items()}
        every = timedelta(
            weeks=parts["w"],
            days=parts["d"],
            hours=parts["h"],
            minutes=parts["m"],
            seconds=parts["s"],
        )
    else:
        raise ValueError(
            "use a number and a unit (500ms, 30s, 5m, 1h, 1d, 1w) or ISO-8601 like PT5M"
        )
    return every


Every = Annotated[
    timedelta | None,
    BeforeValidator(parse_every),
    # The short forms (5m) are not ISO-8601, so do not advertise format: duration.
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}]}),
    Query(
        description="Downsample to the mean of each interval: 30s, 5m, 1h, 1d or ISO-8601 (PT5M)",
        examples=["5m"],
    ),
]


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("query", field), "msg": message, "type": "value_error"}]
    )


@router.get(
    "/{asset_id}/telemetry",
    response_model_exclude_none=True,
    responses=problem_responses(404, 503),
)
def read_telemetry(
    asset_id: AssetIdPath,
    *,
    services: Services,
    _caller: Viewer,
    metric: Annotated[str, Query(min_length=1, max_length=200, examples=["temperature_c"])],
    start: Annotated[
        AwareDatetime | None, Query(description="Inclusive; default `end` minus one hour")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(description="Exclusive; default now")] = None,
    every: Every = None,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_POINTS, description="Most raw points to return; not used with `every`"),
    ] = DEFAULT_POINTS,
) -> TelemetryRead:
    """Return one metric of an asset over [start, end), raw or downsampled to `every`."""
    try:
        end_at = end.astimezone(UTC) if end is not None else services.clock.now().astimezone(UTC)
        start_at = start.astimezone(UTC) if start is not None else end_at - DEFAULT_WINDOW
    except OverflowError as exc:
        raise _invalid("start" if start is not None else "end", "time out of range") from exc
    if start_at >= end_at:
        raise _invalid("start", "start must be before end")
    if every is not None and -(-(end_at - start_at) // every) > MAX_BUCKETS:
        raise _invalid("every", f"the interval makes more than {MAX_BUCKETS} buckets; widen it")
    services.assets.get(asset_id)
    if every is None:
        raw = services.telemetry.read(asset_id, metric, start_at, end_at, limit)
        points = [TelemetryPointRead.from_point(p) for p in raw]
    else:
        buckets = services.telemetry.downsample(asset_id, metric, start_at, end_at, every)
        points = [TelemetryPointRead.from_bucket(b) for b in buckets]
    return TelemetryRead(
        asset_id=asset_id,
        metric=metric,
        start=start_at,
        end=end_at,
        every_s=every.total_seconds() if every is not None else None,
        points=points,
    )


@router.get(
    "/{asset_id}/telemetry/latest",
    response_model_exclude_none=True,
    responses=problem_responses(404, 503),
)
def read_latest_telemetry(
    asset_id: AssetIdPath, services: Services, _caller: Viewer
) -> LatestTelemetryRead:
    """Return the newest point of each metric of an asset."""
    services.assets.get(asset_id)
    latest = services.telemetry.latest(asset_id)
    return LatestTelemetryRead(
        asset_id=asset_id,
        metrics={name: TelemetryPointRead.from_point(point) for name, point in latest.items()},
    )
