"""Passwords (bcrypt), tokens (HS256 JWT) and the middleware that puts the caller on the request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass

import bcrypt
import falcon
import jwt

from taskservice.api_keys import ApiKeys, is_api_key
from taskservice.clock import Clock
from taskservice.http_errors import Unauthorized

# bcrypt only looks at the first 72 bytes of a password (and bcrypt 5 refuses longer ones), so a
# password goes through HMAC-SHA256 first and bcrypt gets the digest, base64-encoded: 44 bytes
# however long the passphrase, and never a NUL byte. This is passlib's `bcrypt_sha256` (v2), in
# its format, so its hashes verify here and ours there. The HMAC is keyed with the hash's own
# bcrypt salt rather than a fixed key: nothing to configure or keep secret, equal passwords give
# unrelated bcrypt inputs, and a digest of the password leaked by another system (an unsalted
# SHA-256, say) cannot be fed to bcrypt to test it against the stored hash ("hash shucking").
BCRYPT_MAX_PASSWORD_BYTES = 72
PREHASHED_PREFIX = "$bcrypt-sha256$"
_PREHASHED = re.compile(
    r"\$bcrypt-sha256\$v=2,t=(2[ab]),r=(\d{1,2})\$([./A-Za-z0-9]{22})\$([./A-Za-z0-9]{31})"
)
JWT_ALGORITHM = "HS256"
CLOCK_SKEW_SECONDS = 60
_VERIFIED_CACHE_SIZE = 4096


def _prehash(password: str, salt: str) -> bytes:
    return base64.b64encode(hmac.new(salt.encode(), password.encode(), hashlib.sha256).digest())


class PasswordHasher:
    """New hashes are `$bcrypt-sha256$v=2,t=2b,r=<rounds>$<salt>$<digest>`; plain bcrypt
    hashes (`$2b$...`, made before passphrases of any length were accepted) still verify."""

    def __init__(self, rounds: int = 12):
        self._rounds = rounds
        # Checked against when the user does not exist, so that an unknown username costs the
        # same time as a wrong password and the two cannot be told apart.
        self._dummy_hash = self.hash("not-a-real-password")

    def hash(self, password: str) -> str:
        setting = bcrypt.gensalt(self._rounds).decode()  # $2b$<rounds>$<22 characters of salt>
        ident, rounds, salt = setting[1:3], int(setting[4:6]), setting[7:]
        digest = bcrypt.hashpw(_prehash(password, salt), setting.encode()).decode()[-31:]
        return f"{PREHASHED_PREFIX}v=2,t={ident},r={rounds}${salt}${digest}"

    def verify(self, password: str, password_hash: str | None) -> bool:
        stored = password_hash or self._dummy_hash
        prehashed = _PREHASHED.fullmatch(stored)
        if prehashed:
            ident, rounds, salt, digest = prehashed.groups()
            matched = bcrypt.checkpw(
                _prehash(password, salt), f"${ident}${int(rounds):02d}${salt}{digest}".encode()
            )
        else:
            # A plain bcrypt hash: only passwords of at most 72 bytes were stored so, and bcrypt
            # cannot tell a longer one from its first 72 bytes, so a longer one never matches
            # (bcrypt's time is spent all the same).
            secret = password.encode()
            fits = len(secret) <= BCRYPT_MAX_PASSWORD_BYTES
            matched = bcrypt.checkpw(secret[:BCRYPT_MAX_PASSWORD_BYTES], stored.encode()) and fits
        return matched and password_hash is not None

    def is_current(self, password_hash: str) -> bool:
        """Whether a stored hash is of the current kind (a plain bcrypt one is not)."""
        return password_hash.startswith(PREHASHED_PREFIX)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int


class TokenService:
    """Issues and verifies expiring HS256 tokens; ``sub`` is the user's id."""

    def __init__(self, secret: str, ttl_seconds: int, clock: Clock):
        self._secret = secret
        self._ttl = ttl_seconds
        self._clock = clock
        # Tokens whose signature was checked already, by the exact token string (signature
        # included, so no other string can hit an entry); their times are checked on every use.
        # Decoding a token is a good part of what a status request costs, and a client polling
        # a task sends the same token again and again.
        self._verified: dict[str, tuple[uuid.UUID, float, float]] = {}

    def issue(self, user_id: uuid.UUID) -> IssuedToken:
        now = int(self._clock().timestamp())
        claims = {"sub": str(user_id), "iat": now, "exp": now + self._ttl}
        return IssuedToken(jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM), self._ttl)

    def verify(self, token: str) -> uuid.UUID:
        """Return the user id in a valid token, or raise ``Unauthorized``."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_signature(token)
            if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                self._verified.clear()  # tokens are short-lived: a cold start now and then is fine
            self._verified[token] = claims
        user_id, iat, exp = claims
        now = self._clock().timestamp()
        if exp <= now:
            raise Unauthorized("The bearer token has expired; log in again.")
        if iat > now + CLOCK_SKEW_SECONDS:
            raise Unauthorized("The bearer token was issued in the future.")
        return user_id

    def _verify_signature(self, token: str) -> tuple[uuid.UUID, float, float]:
        """The user id and times of a token whose signature and claims are valid."""
        try:
            # The algorithm is pinned: a token claiming "none" or any other algorithm fails here.
            # Times are checked in verify(), on every use, against the injected clock.
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                options={
                    "require": ["sub", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"The bearer token is invalid: {exc}.") from None
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise Unauthorized("The bearer token's times are not numbers.")
        try:
            return uuid.UUID(str(claims["sub"])), iat, exp
        except ValueError:
            raise Unauthorized("The bearer token names no valid user.") from None


class AuthMiddleware:
    """Resources that set ``auth_required = True`` get ``req.context.user_id`` or a 401.

    The credential is a login token or an API key (``tsk_...``), sent as ``Authorization:
    Bearer <credential>`` or as ``X-Auth-Token: <credential>`` (the header Judge0's clients
    send). ``req.context.api_key_id`` names the key, None for a login token.
    """

    def __init__(self, tokens: TokenService, api_keys: ApiKeys | None = None):
        self._tokens = tokens
        self._api_keys = api_keys

    def process_resource(self, req: falcon.Request, resp, resource, params) -> None:
        if not getattr(resource, "auth_required", False):
            return
        if not hasattr(resource, f"on_{req.method.lower()}"):
            return  # Falcon answers 405 for a method the resource lacks, token or not
        credential = _credential(req)
        if self._api_keys is not None and is_api_key(credential):
            owner = self._api_keys.verify(credential)
            req.context.user_id, req.context.api_key_id = owner.user_id, owner.key_id
            return
        req.context.user_id = self._tokens.verify(credential)
        req.context.api_key_id = None


def _credential(req: falcon.Request) -> str:
    header = req.get_header("Authorization")
    if not header:
        token = (req.get_header("X-Auth-Token") or "").strip()
        if token:
            return token
        raise Unauthorized(
            "This endpoint needs an 'Authorization: Bearer <token>' header"
            " (or 'X-Auth-Token: <token>'); the token may also be an API key."
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token.strip()
