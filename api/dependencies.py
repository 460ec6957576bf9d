"""Request dependencies shared by the routers: the services and the caller's identity."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

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


class TokenCache:
    """Who the tokens seen in the last `ttl_s` seconds belong to.

    Without it every request spends a database round trip on its token. The price is that
    a token revoked (by `pmkeeper token revoke`, in another process) keeps working here
    for up to `ttl_s`. Only valid tokens are kept, so a new token works at once, and a
    refused one is looked up again every time.
    """

    def __init__(
        self, ttl_s: float, now: Callable[[], float] = time.monotonic, max_entries: int = 10_000
    ) -> None:
        self.ttl_s = ttl_s
        self._now = now
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, TokenInfo]] = {}

    def get(self, token: str) -> TokenInfo | None:
        """Return the token's owner if it was authenticated less than `ttl_s` ago."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if self._now() >= entry[0]:
            self._entries.pop(token, None)
            return None
        return entry[1]

    def put(self, token: str, info: TokenInfo) -> None:
        """Remember the owner of a token just authenticated."""
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # a flood of distinct valid tokens: start over, stay bounded
        self._entries[token] = (self._now() + self.ttl_s, info)


# The dependencies below that do no I/O are coroutines: FastAPI runs a plain `def`
# dependency on a worker thread, and each hand-off costs more than the work itself.


async def get_services(request: Request) -> ApiServices:
    """Return the services the app was created with."""
    return cast(ApiServices, request.app.state.services)


Services = Annotated[ApiServices, Depends(get_services)]


async def current_token(
    request: Request,
    services: Services,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenInfo:
    """Return who the bearer token belongs to; raise AuthError if there is none or it is bad."""
    if credentials is None:
        raise BearerAuthError(
            "send an API token as 'Authorization: Bearer <token>'", invalid_token=False
        )
    token = credentials.credentials
    cache = cast(TokenCache, request.app.state.token_cache)
    info = cache.get(token)
    if info is None:
        info = await run_in_threadpool(services.tokens.authenticate, token)
        if info is None:
            raise BearerAuthError("the API token is unknown or revoked", invalid_token=True)
        cache.put(token, info)
    return info


def require_role(minimum: Role) -> Callable[[TokenInfo], Awaitable[TokenInfo]]:
    """Build a dependency that admits tokens whose role includes `minimum`."""

    async def check_role(token: Annotated[TokenInfo, Depends(current_token)]) -> TokenInfo:
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
