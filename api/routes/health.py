"""Unauthenticated operational routes: `/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.dependencies import Services
from api.schemas import HealthRead, ReadinessRead

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> HealthRead:
    """Answer while the process serves requests."""
    return HealthRead()


@router.get("/readyz", responses={503: {"model": ReadinessRead}})
def readyz(services: Services, response: Response) -> ReadinessRead:
    """Run every readiness check; answer 503 if any fails."""
    checks: dict[str, bool] = {}
    for name, check in services.readiness_checks.items():
        try:
            checks[name] = bool(check())
        except Exception:  # a probe must report, not crash: any failure means not ready
            log.warning("readiness check %s raised", name, exc_info=True)
            checks[name] = False
    ready = all(checks.values())
    if not ready:
        response.status_code = 503
    return ReadinessRead(status="ok" if ready else "unavailable", checks=checks)


@router.get("/metrics", response_class=Response)
def metrics(services: Services) -> Response:
    """Expose the Prometheus metrics in the text exposition format."""
    return Response(generate_latest(services.metrics_registry), media_type=CONTENT_TYPE_LATEST)
