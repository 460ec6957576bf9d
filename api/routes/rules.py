"""Routes of rule definitions: `/api/v1/rules`."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime

from api.dependencies import Planner, Services, Viewer
from api.pagination import keyset_page
from api.problems import problem_responses
from api.schemas import (
    BacktestAlertRead,
    BacktestRead,
    BacktestWorkOrderRead,
    RuleCreate,
    RuleListRead,
    RuleRead,
)
from api.services import ApiServices
from core.assets import Asset
from core.errors import NotFoundError, ValidationError
from core.telemetry import datetime_to_ms
from rules.backtest import backtest
from rules.engine import selects
from rules.model import RULE_ID_PATTERN, Rule, Selector

router = APIRouter(prefix="/rules", tags=["rules"])

MAX_PAGE = 500
RuleIdPath = Annotated[str, Path(pattern=RULE_ID_PATTERN)]

# A backtest replays at most this much history per request; split longer studies.
MAX_BACKTEST_RANGE = timedelta(days=31)
# Readings of one asset a backtest may replay (a day of 1 Hz data is 86,400). An asset with
# more is refused with 422 rather than silently cut short, which would skew the answer.
MAX_BACKTEST_POINTS_PER_ASSET = 100_000
# Bounds on the whole request, so a broad selector cannot replay the entire fleet at once.
MAX_BACKTEST_ASSETS = 1_000
MAX_BACKTEST_READINGS = 1_000_000
_ASSET_PAGE = 500


@router.post("", status_code=201, responses=problem_responses(409))
def create_rule(
    body: RuleCreate, services: Services, _caller: Planner, request: Request, response: Response
) -> RuleRead:
    """Create a rule; an invalid one is refused with 422 saying what is wrong."""
    rule = services.rules.add(Rule.model_validate(body.model_dump()))
    response.headers["Location"] = str(request.url_for("get_rule", rule_id=rule.id))
    return RuleRead.from_rule(rule)


@router.get("")
def list_rules(
    services: Services,
    _caller: Viewer,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
) -> RuleListRead:
    """List rules ordered by id, a page at a time."""
    page = services.rules.list(after_id=cursor, limit=limit + 1)
    items, next_cursor = keyset_page(page, limit, lambda rule: rule.id)
    return RuleListRead(items=[RuleRead.from_rule(r) for r in items], next_cursor=next_cursor)


@router.get("/{rule_id}", responses=problem_responses(404))
def get_rule(rule_id: RuleIdPath, services: Services, _caller: Viewer) -> RuleRead:
    """Return one rule."""
    return RuleRead.from_rule(services.rules.get(rule_id))


@router.put("/{rule_id}", responses=problem_responses(404))
def replace_rule(
    rule_id: RuleIdPath, body: RuleCreate, services: Services, _caller: Planner
) -> RuleRead:
    """Replace a rule's whole definition; the id in the body must match the path."""
    if body.id != rule_id:
        raise ValidationError(f"body id {body.id!r} does not match the path's {rule_id!r}")
    return RuleRead.from_rule(services.rules.replace(Rule.model_validate(body.model_dump())))


@router.delete("/{rule_id}", status_code=204, responses=problem_responses(404))
def delete_rule(rule_id: RuleIdPath, services: Services, _caller: Planner) -> Response:
    """Delete a rule; its open alerts are resolved, its work orders stay."""
    services.rules.delete(rule_id)
    return Response(status_code=204)


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("query", field), "msg": message, "type": "value_error"}]
    )


def _selected_assets(services: ApiServices, selector: Selector) -> list[str]:
    """Return the ids of the assets a selector picks, matched as live evaluation matches."""
    if selector.asset_id is not None:
        try:
            asset: Asset | None = services.assets.get(selector.asset_id)
        except NotFoundError:
            asset = None  # live evaluation still watches an id nobody registered
        return [selector.asset_id] if selects(selector, selector.asset_id, asset) else []
    found: list[str] = []
    after: str | None = None
    while True:
        page = services.assets.list(
            site=selector.site, type=selector.asset_type, after_id=after, limit=_ASSET_PAGE
        )
        found += [asset.id for asset in page if selects(selector, asset.id, asset)]
        if len(page) < _ASSET_PAGE:
            return found
        after = page[-1].id


@router.post("/{rule_id}/backtest", responses=problem_responses(404, 503))
def backtest_rule(
    rule_id: RuleIdPath,
    services: Services,
    _caller: Viewer,
    start: Annotated[AwareDatetime, Query(description="Inclusive; the rule starts cold here")],
    end: Annotated[AwareDatetime, Query(description="Exclusive")],
) -> BacktestRead:
    """Replay stored telemetry through a rule: the alerts and work orders it would have opened.

    The rule runs exactly as live evaluation runs it, on every asset its selector picks, with
    the live alert damping (flapping, one predictive work order per asset). Nothing is written.

    - Only readings in [start, end) are replayed, so windows (rolling, trend, rate of change)
      and `hold_for` periods start empty at `start`: a condition already holding then is
      first seen at the first reading.
    - The range may span at most 31 days, one asset at most 100,000 readings of the rule's
      metric, the selector at most 1,000 assets and the whole request 1,000,000 readings; a
      larger request is refused with 422 rather than answered from part of the data.
    - A disabled rule is replayed too, so a draft can be tried before it is switched on.
    """
    try:
        start_at, end_at = start.astimezone(UTC), end.astimezone(UTC)
    except OverflowError as exc:
        raise _invalid("start", "time out of range") from exc
    if start_at >= end_at:
        raise _invalid("start", "start must be before end")
    if end_at - start_at > MAX_BACKTEST_RANGE:
        raise _invalid("end", f"a backtest spans at most {MAX_BACKTEST_RANGE.days} days")
    rule = services.rules.get(rule_id)
    metric = rule.selector.metric
    asset_ids = _selected_assets(services, rule.selector)
    if len(asset_ids) > MAX_BACKTEST_ASSETS:
        raise ValidationError(
            f"the rule picks {len(asset_ids)} assets; a backtest covers at most "
            f"{MAX_BACKTEST_ASSETS}: backtest a copy with a narrower selector",
            assets=len(asset_ids),
            limit=MAX_BACKTEST_ASSETS,
        )
    series: dict[str, list[tuple[int, float]]] = {}
    total = 0
    for asset_id in asset_ids:
        points = services.telemetry.read(
            asset_id, metric, start_at, end_at, MAX_BACKTEST_POINTS_PER_ASSET + 1
        )
        if len(points) > MAX_BACKTEST_POINTS_PER_ASSET:
            raise ValidationError(
                f"asset {asset_id!r} has more than {MAX_BACKTEST_POINTS_PER_ASSET} readings of "
                f"{metric} in the range; backtest a shorter range",
                asset_id=asset_id,
                limit=MAX_BACKTEST_POINTS_PER_ASSET,
            )
        total += len(points)
        if total > MAX_BACKTEST_READINGS:
            raise ValidationError(
                f"the range holds more than {MAX_BACKTEST_READINGS} readings of {metric} "
                "over the rule's assets; backtest a shorter range",
                limit=MAX_BACKTEST_READINGS,
            )
        series[asset_id] = [(datetime_to_ms(point.at), point.value) for point in points]
    result = backtest(
        rule,
        series,
        start_ms=datetime_to_ms(start_at),
        end_ms=datetime_to_ms(end_at),
        policy=services.alert_policy,
    )
    return BacktestRead(
        rule_id=rule.id,
        start=start_at,
        end=end_at,
        assets_evaluated=len(asset_ids),
        readings=result.readings,
        alerts=[BacktestAlertRead.model_validate(a, from_attributes=True) for a in result.alerts],
        work_orders=[
            BacktestWorkOrderRead.model_validate(o, from_attributes=True)
            for o in result.work_orders
        ],
        alert_count=len(result.alerts),
        work_order_count=len(result.work_orders),
    )
