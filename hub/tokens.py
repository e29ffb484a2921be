"""Signed connection tokens: HMAC-SHA256 JWTs (PyJWT) naming a user, an expiry and grants.

    tokens = TokenVerifier(secret)
    token = tokens.mint("ann", ttl=3600, topics={"room:*": ["join", "publish"]})
    identity = tokens.verify(token)      # Identity(user="ann", claims=..., expires_at=...)

A token's claims: `sub` (the user id, required), `exp` (when it runs out,
required), and optionally `topics`, the grants the permissions of routes can
ask for (`hub.permissions`): either a list of topic patterns, each granting
every action, or a map from pattern to the actions it grants (a list of
`join`, `publish`, `call`, `presence`, `history`, or `"*"`).

The hub reads a token from the connect request (`?token=...`, since a
browser cannot set headers on a WebSocket, or `Authorization: Bearer ...`)
in `token_authenticate`, the one `authenticate` function the WebSocket
upgrade (and any other transport's open) calls. A refused token is a 401
whose body says what was wrong (expired, bad signature, a claim missing),
never the token itself.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from hub.gateway import Authenticate, AuthenticationError, ConnectRequest
from hub.identity import Identity
from hub.permissions import Grants, grants_of

__all__ = [
    "ALGORITHM",
    "DEFAULT_LEEWAY_SECONDS",
    "DEFAULT_REFRESH_LEAD_SECONDS",
    "MIN_SECRET_LENGTH",
    "TOKEN_CHALLENGE",
    "TokenError",
    "TokenVerifier",
    "grants_in",
    "token_authenticate",
    "token_of",
]

#: The one algorithm tokens are signed with: HMAC with SHA-256 (RFC 7518 §3.2).
ALGORITHM: Final = "HS256"

#: The shortest secret the hub takes. RFC 7518 §3.2 asks for a key of at least
#: the hash's size (256 bits); 32 characters of a random secret are that much.
MIN_SECRET_LENGTH: Final = 32

#: How far a token's `exp` (and `nbf`, `iat`) may be off for clocks that differ.
DEFAULT_LEEWAY_SECONDS: Final = 10.0

#: A live connection is sent Expiring this long before its token runs out.
DEFAULT_REFRESH_LEAD_SECONDS: Final = 60.0

#: The WWW-Authenticate challenge of a refused token (RFC 6750 §3).
TOKEN_CHALLENGE: Final = 'Bearer realm="triohub"'

_REQUIRED_CLAIMS: Final = ("sub", "exp")


class TokenError(AuthenticationError):
    """A token that is not good: expired, forged, malformed or missing a claim.

    `reason` says which, for the client (a 401's body, or an error Reply to a
    refresh); it never quotes the token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason, challenge=f'{TOKEN_CHALLENGE}, error="invalid_token"')


@attrs.frozen
class TokenVerifier:
    """Checks (and, for development and tests, mints) the hub's signed tokens.

    `secret` is the HMAC key (`auth.secret`); `leeway` the clock skew allowed
    on `exp`, `nbf` and `iat`, in seconds. `clock` reads the wall clock
    (`time.time`), which a token's times are in.
    """

    secret: str = attrs.field(repr=False)
    leeway: float = DEFAULT_LEEWAY_SECONDS
    clock: Any = attrs.field(default=time.time, repr=False)

    @secret.validator
    def _check_secret(self, attribute: attrs.Attribute[str], value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"a token secret must be at least {MIN_SECRET_LENGTH} characters, "
                f"got {len(value)}; make one with `python -c "
                f"'import secrets; print(secrets.token_urlsafe(32))'`"
            )

    def mint(
        self,
        user: str,
        *,
        ttl: float,
        topics: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A token for `user` that runs out `ttl` seconds from now, granting `topics`.

        `claims` are added as they are (they cannot replace `sub` and `exp`).
        Raises ValueError for an empty user, a ttl not above 0, or grants of
        an unknown action.
        """
        import jwt  # see `verify`

        if not user:
            raise ValueError("a token needs a user id")
        if not 0 < ttl < math.inf:
            raise ValueError(f"a token's ttl must be a number of seconds above 0, got {ttl!r}")
        now = self.clock()
        payload: dict[str, Any] = {**(claims or {}), "sub": user, "iat": int(now)}
        payload["exp"] = int(now + ttl)
        if isinstance(topics, Mapping):
            payload["topics"] = {pattern: list(actions) for pattern, actions in topics.items()}
        elif topics is not None:
            payload["topics"] = list(topics)
        if topics is not None:
            grants_of(payload["topics"])  # raises ValueError if malformed
        return jwt.encode(payload, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Identity:
        """The identity `token` proves; raises TokenError saying what is wrong with it."""
        # Imported on first use: PyJWT loads `cryptography` when it is
        # installed, which would slow every `hub` command's start by tens of
        # milliseconds for hubs that take no tokens.
        import jwt

        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                leeway=self.leeway,
                options={"require": list(_REQUIRED_CLAIMS), "verify_sub": False},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("the token has expired; get a new one") from None
        except jwt.InvalidSignatureError:
            raise TokenError(
                "the token's signature is not valid (not signed with this hub's secret)"
            ) from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenError(f"the token lacks the {error.claim!r} claim") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("the token is not valid yet (its 'nbf' or 'iat' is ahead)") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError(f"the token must be signed with {ALGORITHM}") from None
        except jwt.DecodeError:
            raise TokenError("the token is malformed (not a signed JWT)") from None
        except jwt.InvalidTokenError as error:
            # PyJWT's messages name the claim at fault, never the token.
            raise TokenError(f"the token is not valid: {error}") from None
        user = claims["sub"]
        if not isinstance(user, str) or not user:
            raise TokenError("the token's 'sub' claim must be a non-empty string (the user id)")
        if "topics" in claims:
            try:
                grants_of(claims["topics"])
            except ValueError as error:
                raise TokenError(f"the token's 'topics' claim is malformed: {error}") from None
        return Identity(user=user, claims=claims, expires_at=float(claims["exp"]))


def grants_in(identity: object) -> Grants | None:
    """The topic grants an identity's token carries; None without a token or grants."""
    if not isinstance(identity, Identity):
        return None
    topics = identity.claims.get("topics")
    return None if topics is None else grants_of(topics)


def token_of(request: ConnectRequest) -> str | None:
    """The token a connect request carries: `Authorization: Bearer`, else `?token=`."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    token = request.query.get("token")
    return token or None


def token_authenticate(
    verifier: TokenVerifier | None,
    app_authenticate: Authenticate | None,
    *,
    required: bool = False,
) -> Authenticate | None:
    """The hub's `authenticate`: a token if the request carries one, else the application's hook.

    - a request with a token gets the token's Identity, or a 401 saying why
      the token is not good (the application's hook is not asked);
    - one without a token goes to the application's hook (a cookie, an API
      key: the pluggable authenticator), whose answer stands;
    - with `required`, a request that ends up anonymous (no token, and no
      identity from the hook) is refused with 401.

    Without a verifier (no `auth.secret`) a token is not looked for. Returns
    None when there is nothing to check at all.
    """
    if verifier is None and app_authenticate is None and not required:
        return None

    async def authenticate(request: ConnectRequest) -> object:
        token = token_of(request) if verifier is not None else None
        if token is not None:
            assert verifier is not None
            return verifier.verify(token)
        identity: object = None
        if app_authenticate is not None:
            identity = app_authenticate(request)
            if inspect.isawaitable(identity):
                identity = await identity
        if required and identity is None:
            raise AuthenticationError(
                "a token is required: send it as ?token=TOKEN or 'Authorization: Bearer TOKEN'",
                challenge=TOKEN_CHALLENGE,
            )
        return identity

    return authenticate
