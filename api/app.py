"""Build the FastAPI application from the services the composition root hands in."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, FastAPI

from api.dependencies import TokenCache
from api.problems import document_problem_media_type, install_problem_handlers, problem_responses
from api.routes import (
    alerts,
    assets,
    calendar,
    deadletters,
    health,
    inventory,
    plans,
    rules,
    technicians,
    telemetry,
    work_orders,
)
from api.services import ApiServices

__all__ = ["ApiServices", "create_app"]

API_PREFIX = "/api/v1"


def _version() -> str:
    try:
        return version("pmkeeper")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(services: ApiServices, routers: Sequence[APIRouter] = ()) -> FastAPI:
    """Return the API app; `routers` are extra resource routers mounted under /api/v1."""
    app = FastAPI(
        title="pmkeeper",
        version=_version(),
        summary="Preventive maintenance from sensor reading to booked technician",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    app.state.token_cache = TokenCache(services.token_cache_s)
    install_problem_handlers(app)

    api_v1 = APIRouter(prefix=API_PREFIX, responses=problem_responses(401, 403, 422))
    for router in (
        assets.router,
        telemetry.router,
        deadletters.router,
        rules.router,
        alerts.router,
        work_orders.router,
        work_orders.escalations_router,
        inventory.router,
        technicians.router,
        technicians.assignments_router,
        plans.router,
        plans.sites_router,
        calendar.router,
        calendar.bookings_router,
        *routers,
    ):
        api_v1.include_router(router)
    app.include_router(api_v1)
    app.include_router(health.router)

    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return document_problem_media_type(build_openapi())

    app.openapi = openapi  # type: ignore[method-assign]
    return app
