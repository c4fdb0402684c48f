"""The local gateway reuses an authorizer's verdict per identity as API Gateway does (ReauthorizeEvery)."""

from __future__ import annotations

from localcloud.gateway import AuthorizerVerdicts
from localcloud.template import authorizer_cache_seconds, load_template


def test_a_verdict_is_reused_for_the_same_identity_until_it_expires() -> None:
    now = [0.0]
    verdicts = AuthorizerVerdicts(60, clock=lambda: now[0])
    allowed = {"isAuthorized": True, "context": {"user_id": "u1"}}
    verdicts.put("Bearer a", allowed)
    verdicts.put("Bearer b", {"isAuthorized": False})
    now[0] = 59.9
    assert verdicts.get("Bearer a") == allowed
    assert verdicts.get("Bearer b") == {"isAuthorized": False}
    assert verdicts.get("Bearer c") is None
    now[0] = 60.0
    assert verdicts.get("Bearer a") is None


def test_no_caching_when_the_api_does_not_cache() -> None:
    verdicts = AuthorizerVerdicts(0)
    verdicts.put("Bearer a", {"isAuthorized": True})
    assert verdicts.get("Bearer a") is None


def test_the_cache_lasts_what_the_template_says() -> None:
    assert authorizer_cache_seconds(load_template()) == 60
