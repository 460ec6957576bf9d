"""Routes of rule definitions: `/api/v1/rules`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from api.dependencies import Planner, Services, Viewer
from api.pagination import keyset_page
from api.problems import problem_responses
from api.schemas import RuleCreate, RuleListRead, RuleRead
from core.errors import ValidationError
from rules.model import RULE_ID_PATTERN, Rule

router = APIRouter(prefix="/rules", tags=["rules"])

MAX_PAGE = 500
RuleIdPath = Annotated[str, Path(pattern=RULE_ID_PATTERN)]


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
    """Delete a rule."""
    services.rules.delete(rule_id)
    return Response(status_code=204)
