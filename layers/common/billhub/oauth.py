"""The ``state`` of an OAuth2 link: signed, short-lived, single-use, and bound to the user who began it.

The callback arrives from the user's browser without our access token, so the state is what says
whose link it is. It is a JWT signed with the API's key under its own audience (an access token is
never a valid state, nor a state a valid access token) that carries only a nonce: who asked and for
what is stored under that nonce, so the provider and the browser learn nothing, and marking it used
on use makes the state work once (``consume_oauth_state`` of ``billhub.store.oauth_states``). It is
signed and verified as access tokens are (``billhub.auth.RingJwt``): it names its key (``kid``), so a
link begun before a rotation, or on a container that already holds the new key, still completes.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from pydantic import BaseModel, ValidationError

from billhub.auth import InvalidJwt, KeyRing, RingJwt
from billhub.errors import NotFound, ServiceError
from billhub.store.errors import ItemMissing
from billhub.store.protocols import OAuthStateStore

STATE_TTL = timedelta(minutes=10)


class InvalidOAuthState(ServiceError):
    status = 400
    code = "invalid_oauth_state"


class PendingLink(BaseModel):
    """What the user asked for when they started the OAuth2 flow."""

    user_id: str
    provider: str
    redirect_uri: str
    account_id: str | None = None
    nickname: str | None = None


class OAuthStates:
    def __init__(
        self, store: OAuthStateStore, keys: KeyRing, issuer: str, audience: str, previous_key_grace_seconds: int
    ) -> None:
        self._store = store
        self._jwt = RingJwt(keys, issuer, f"{audience}#oauth-state", previous_key_grace_seconds)

    def prepare(self) -> None:
        """Before a SnapStart snapshot: the key ring's clients built, no key read."""
        self._jwt.prepare()

    def forget(self) -> None:
        """After a SnapStart restore: the key ring's caches and re-read clock dropped."""
        self._jwt.forget()

    def issue(self, link: PendingLink, now: datetime) -> str:
        """A state for ``link``; ``NotFound`` if its user is gone or being deleted."""
        nonce = secrets.token_urlsafe(18)
        expires_at = now + STATE_TTL
        try:
            self._store.put_oauth_state(link.user_id, nonce, link.model_dump(exclude_none=True), expires_at)
        except ItemMissing as error:
            raise NotFound("No such user.") from error
        return self._jwt.sign({"iat": now, "exp": expires_at, "jti": nonce})

    def redeem(self, state: str, provider: str, now: datetime) -> PendingLink:
        """The link the state stands for, once; ``InvalidOAuthState`` if forged, expired, reused or mismatched."""
        try:
            claims = self._jwt.verify(state, now, require=["jti"])
        except InvalidJwt as error:
            raise InvalidOAuthState("The link request is invalid or has expired; start linking again.") from error
        stored = self._store.consume_oauth_state(str(claims["jti"]), now)
        if stored is None:
            raise InvalidOAuthState("The link request was already used or has expired; start linking again.")
        try:
            link = PendingLink.model_validate(stored)
        except ValidationError as error:
            raise InvalidOAuthState("The link request is invalid; start linking again.") from error
        if link.provider != provider:
            raise InvalidOAuthState("The link request was started for another provider.")
        return link
