"""Tokens and permissions as plain functions: minting, each refusal and its reason, the rules.

The same `authenticate` function serves every transport (the WebSocket
upgrade, and long-polling's open): it is tested here with a ConnectRequest
alone, and over real sockets in tests/hub/test_hub_auth.py.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from hub.config import AuthConfig, HubConfig
from hub.errors import ConfigError
from hub.gateway import AuthenticationError, ConnectRequest
from hub.identity import Identity
from hub.permissions import PERSONAL, Access, Action, Allow, Permissions, grants_of
from hub.tokens import TokenError, TokenVerifier, token_authenticate, token_of

SECRET = "a-test-secret-that-is-long-enough-0123456789"
OTHER_SECRET = "another-secret-that-is-long-enough-9876543210"


def verifier(**options: Any) -> TokenVerifier:
    return TokenVerifier(SECRET, **options)


def signed(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def request(query: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Any:
    return ConnectRequest(path="/ws", query=query or {}, headers=headers or {}, remote=None)


def refusal(token: str, tokens: TokenVerifier | None = None) -> str:
    with pytest.raises(TokenError) as caught:
        (tokens or verifier()).verify(token)
    assert token not in caught.value.reason  # never echoed
    assert "invalid_token" in caught.value.challenge
    return caught.value.reason


def test_a_minted_token_verifies_to_its_user_expiry_and_grants() -> None:
    tokens = verifier()
    token = tokens.mint("ann", ttl=600, topics={"room:*": ["join", "publish"]})
    identity = tokens.verify(token)
    assert identity.user == "ann"
    assert identity.expires_at is not None
    assert time.time() + 590 < identity.expires_at <= time.time() + 600
    assert identity.claims["topics"] == {"room:*": ["join", "publish"]}
    assert grants_of(identity.claims["topics"]) == (
        ("room:*", frozenset({Action.JOIN, Action.PUBLISH})),
    )


def test_an_expired_token_is_refused_saying_so() -> None:
    token = signed({"sub": "ann", "exp": int(time.time()) - 60})
    assert refusal(token) == "the token has expired; get a new one"


def test_the_leeway_lets_a_token_just_past_its_expiry_in() -> None:
    token = signed({"sub": "ann", "exp": int(time.time()) - 5})
    assert verifier(leeway=30).verify(token).user == "ann"
    assert "expired" in refusal(token, verifier(leeway=0))


def test_a_token_signed_with_another_secret_is_forged() -> None:
    token = TokenVerifier(OTHER_SECRET).mint("ann", ttl=60)
    assert refusal(token) == (
        "the token's signature is not valid (not signed with this hub's secret)"
    )


def test_an_altered_token_is_forged() -> None:
    header, _payload, signature = verifier().mint("ann", ttl=60).split(".")
    forged_payload = jwt.utils.base64url_encode(b'{"sub":"admin","exp":9999999999}').decode()
    assert "signature is not valid" in refusal(f"{header}.{forged_payload}.{signature}")


@pytest.mark.parametrize(("missing", "claims"), [("sub", {"exp": 2**31}), ("exp", {"sub": "a"})])
def test_a_token_without_a_required_claim_is_refused_naming_it(
    missing: str, claims: dict[str, Any]
) -> None:
    assert refusal(signed(claims)) == f"the token lacks the {missing!r} claim"


def test_an_unsigned_or_otherwise_signed_token_is_refused() -> None:
    unsigned = jwt.encode({"sub": "ann", "exp": 2**31}, None, algorithm="none")
    assert refusal(unsigned) == "the token must be signed with HS256"
    hs512 = signed({"sub": "ann", "exp": 2**31}, SECRET * 2, algorithm="HS512")
    assert refusal(hs512) == "the token must be signed with HS256"


def test_garbage_is_a_malformed_token() -> None:
    assert refusal("not-a-jwt") == "the token is malformed (not a signed JWT)"


def test_a_token_not_valid_yet_is_refused() -> None:
    token = signed({"sub": "ann", "exp": 2**31, "nbf": int(time.time()) + 3600})
    assert refusal(token) == "the token is not valid yet (its 'nbf' or 'iat' is ahead)"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"sub": "", "exp": 2**31}, "the token's 'sub' claim must be a non-empty string"),
        ({"sub": 7, "exp": 2**31}, "the token's 'sub' claim must be a non-empty string"),
        ({"sub": "a", "exp": 2**31, "topics": "room:*"}, "'topics' claim is malformed"),
        ({"sub": "a", "exp": 2**31, "topics": {"room:*": ["fly"]}}, "unknown action 'fly'"),
    ],
)
def test_bad_claims_are_refused_saying_which(claims: dict[str, Any], reason: str) -> None:
    assert reason in refusal(signed(claims))


def test_a_short_secret_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(ValueError, match=r"at least 32 characters.*secrets\.token_urlsafe"):
        TokenVerifier("short")


def test_the_token_comes_from_the_bearer_header_or_the_query() -> None:
    assert token_of(request(headers={"authorization": "Bearer abc"})) == "abc"
    assert token_of(request(headers={"authorization": "bearer  abc "})) == "abc"
    assert token_of(request(query={"token": "xyz"})) == "xyz"
    assert token_of(request(headers={"authorization": "Basic abc"})) is None
    assert token_of(request()) is None


async def test_authenticate_takes_a_token_else_asks_the_application() -> None:
    tokens = verifier()
    asked: list[ConnectRequest] = []

    async def app_hook(connect: ConnectRequest) -> object:
        asked.append(connect)
        return connect.headers.get("cookie")

    authenticate = token_authenticate(tokens, app_hook)
    assert authenticate is not None
    identity = await authenticate(request(query={"token": tokens.mint("ann", ttl=60)}))
    assert isinstance(identity, Identity) and identity.user == "ann"
    assert asked == []  # a token decides alone
    assert await authenticate(request(headers={"cookie": "bob"})) == "bob"
    with pytest.raises(TokenError, match="expired"):
        await authenticate(request(query={"token": signed({"sub": "a", "exp": 1})}))


async def test_required_refuses_anonymous_requests_but_not_the_applications_users() -> None:
    tokens = verifier()
    authenticate = token_authenticate(
        tokens, lambda connect: connect.query.get("user"), required=True
    )
    assert authenticate is not None
    with pytest.raises(AuthenticationError, match="a token is required: send it as"):
        await authenticate(request())
    assert await authenticate(request(query={"user": "carl"})) == "carl"
    assert token_authenticate(None, None) is None


def test_the_secret_settings() -> None:
    with pytest.raises(ConfigError, match=r"auth\.required is true but .* set auth\.secret"):
        HubConfig.from_settings({"auth": {"required": True}})
    with pytest.raises(ConfigError, match=r"auth\.secret must be a secret of at least 32"):
        HubConfig.from_settings({"auth": {"secret": "short"}})
    with pytest.raises(ConfigError, match="both given; set only one"):
        HubConfig.from_settings({"auth": {"secret": SECRET, "secret_file": "/x"}})
    assert AuthConfig().verifier() is None
    config = HubConfig.from_settings({"auth": {"secret": SECRET, "leeway_seconds": 3}})
    assert SECRET not in repr(config)
    made = config.auth.verifier()
    assert made is not None and made.leeway == 3


def test_the_secret_file(tmp_path: Any) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    made = AuthConfig(secret_file=str(path)).verifier()
    assert made is not None and made.secret == SECRET
    with pytest.raises(ConfigError, match="cannot read"):
        AuthConfig(secret_file=str(tmp_path / "missing")).verifier()
    path.write_text("short")
    with pytest.raises(ConfigError, match="holds 5 characters; a token secret needs at least 32"):
        AuthConfig(secret_file=str(path)).verifier()


# --- the rules -------------------------------------------------------------------


def identity(user: str, topics: object = None) -> Identity:
    claims: dict[str, Any] = {"sub": user, "exp": 2**31}
    if topics is not None:
        claims["topics"] = topics
    return Identity(user, claims, 2**31)


def test_each_rule_allows_and_refuses_with_a_reason() -> None:
    def check(rule: Any, who: object, topic: str = "room:a", pattern: str = "room:*") -> str | None:
        return Permissions(publish=rule).refusal(Action.PUBLISH, who, topic, pattern)

    assert check(Allow.ANYONE, None) is None
    assert check(Allow.SERVICE, None) is None  # decided by the service, later
    assert check(Allow.AUTHENTICATED, "ann") is None
    assert check(Allow.AUTHENTICATED, None) == (
        "publishing to topic 'room:a' needs an authenticated connection (a token)"
    )
    assert check(Allow.GRANTED, identity("ann", ["room:*"])) is None
    assert check(Allow.GRANTED, identity("ann", {"room:a": ["publish"]})) is None
    assert check(Allow.GRANTED, identity("ann", {"room:a": ["join"]})) == (
        "the token does not grant 'publish' on topic 'room:a'"
    )
    assert check(Allow.GRANTED, identity("ann", ["room:b"])) is not None
    assert check(Allow.GRANTED, "ann") == (
        "publishing to topic 'room:a' needs a token that grants 'publish'"
    )
    assert check(lambda access: access.user == "ann", "ann") is None
    assert check(lambda access: access.user == "ann", "bob") == (
        "publishing to topic 'room:a' is not allowed for this connection"
    )


def test_a_personal_topic_is_its_users_alone() -> None:
    def join(who: object, topic: str) -> str | None:
        return PERSONAL.refusal(Action.JOIN, who, topic, "user:*")

    assert join("ann", "user:ann") is None
    assert join(identity("ann"), "user:ann") is None
    assert join("ann", "user:bob") == (
        "topic 'user:bob' is user 'bob''s own: only that user may be joining it"
    )
    assert join(None, "user:ann") is not None
    assert join("ann", "user:ann:x") is not None  # the whole rest names the user
    assert PERSONAL.refusal(Action.JOIN, "ann", "user", "user") == (
        "topic 'user' names no user: joining it is not allowed"
    )


def test_a_rule_function_sees_the_access() -> None:
    seen: list[Access] = []
    Permissions(history=lambda access: seen.append(access) or True).refusal(
        Action.HISTORY, "ann", "room:a", "room:*"
    )
    assert seen == [Access("ann", "room:a", Action.HISTORY, "room:*")]
    assert seen[0].user == "ann"


def test_a_rule_must_be_an_allow_or_a_function() -> None:
    with pytest.raises(TypeError, match="permission 'join' must be an Allow or a function"):
        Permissions(join="anyone")  # type: ignore[arg-type]


def test_grants_are_read_strictly() -> None:
    assert grants_of({"room:*": "*"}) == (("room:*", frozenset(Action)),)
    with pytest.raises(ValueError, match="must be a list or"):
        grants_of({"room:*": "join"})
    with pytest.raises(ValueError, match="non-empty string"):
        grants_of([""])
