"""Request dependencies shared by the routers: the services and the caller's identity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import ApiServices
from core.auth import Role, TokenInfo
from core.errors import AuthError, ForbiddenError

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token, as printed by `pmkeeper token create --role <role>`",
)


class BearerAuthError(AuthError):
    """Raise when a request carries no bearer token, or one that is unknown or revoked."""

    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        super().__init__(detail)
        # RFC 6750 §3: say `invalid_token` only when a token was sent and refused.
        self.challenge = (
            'Bearer realm="pmkeeper", error="invalid_token"'
            if invalid_token
            else 'Bearer realm="pmkeeper"'
        )


def get_services(request: Request) -> ApiServices:
    """Return the services the app was created with."""
    return cast(ApiServices, request.app.state.services)


Services = Annotated[ApiServices, Depends(get_services)]


def current_token(
    services: Services,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenInfo:
    """Return who the bearer token belongs to; raise AuthError if there is none or it is bad."""
    if credentials is None:
        raise BearerAuthError(
            "send an API token as 'Authorization: Bearer <token>'", invalid_token=False
        )
    info = services.tokens.authenticate(credentials.credentials)
    if info is None:
        raise BearerAuthError("the API token is unknown or revoked", invalid_token=True)
    return info


def require_role(minimum: Role) -> Callable[[TokenInfo], TokenInfo]:
    """Build a dependency that admits tokens whose role includes `minimum`."""

    def check_role(token: Annotated[TokenInfo, Depends(current_token)]) -> TokenInfo:
        if not token.role.includes(minimum):
            raise ForbiddenError(
                f"this needs the {minimum.value} role or above; the token has {token.role.value}",
                required_role=minimum.value,
            )
        return token

    check_role.__name__ = f"require_{minimum.value}"
    return check_role


Viewer = Annotated[TokenInfo, Depends(require_role(Role.VIEWER))]
Technician = Annotated[TokenInfo, Depends(require_role(Role.TECHNICIAN))]
Planner = Annotated[TokenInfo, Depends(require_role(Role.PLANNER))]
Admin = Annotated[TokenInfo, Depends(require_role(Role.ADMIN))]
