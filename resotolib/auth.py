"""Pre-shared-key JWTs, compatible with Resoto's clients.

A token is HS256. Its header carries ``salt``: the standard base64 of 16 random bytes. The signing
key is ``pbkdf2_hmac("sha256", psk, salt, 100000)``; the payload carries ``exp``. Deriving a key is
deliberately slow, so both sides cache keys per salt and clients reuse a token until shortly
before it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any

import jwt
from pydantic import AfterValidator

ALGORITHM = "HS256"
ITERATIONS = 100_000
TOKEN_LIFETIME = 300
RENEW_BEFORE = 60
LEEWAY = 10
KEY_CACHE_SIZE = 256


def check_psk(value: str | None) -> str | None:
    """None (no authentication) or a key: an empty one would silently mean no authentication."""
    if value is not None and not value.strip():
        raise ValueError("empty: give a key, or leave it unset to run without authentication")
    return value


Psk = Annotated[str | None, AfterValidator(check_psk)]
"""A settings field holding the pre-shared key (keep it out of reprs: ``Field(repr=False)``)."""


class AuthError(ValueError):
    """The token is missing, malformed, expired, or not signed with our key."""


def derive_key(psk: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", psk.encode(), salt, ITERATIONS)


class _KeyCache:
    def __init__(self, psk: str, size: int = KEY_CACHE_SIZE) -> None:
        self.psk = psk
        self._size = size
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, salt: bytes) -> bytes | None:
        key = self._keys.get(salt)
        if key is not None:
            self._keys.move_to_end(salt)
        return key

    def put(self, salt: bytes, key: bytes) -> None:
        self._keys[salt] = key
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def key(self, salt: bytes) -> bytes:
        key = self.get(salt)
        if key is None:
            key = derive_key(self.psk, salt)
            self.put(salt, key)
        return key


def encode(payload: dict[str, Any], psk: str, lifetime: int = TOKEN_LIFETIME, now: float | None = None) -> str:
    salt = os.urandom(16)
    claims = {**payload, "exp": int((now if now is not None else time.time()) + lifetime)}
    headers = {"salt": base64.standard_b64encode(salt).decode()}
    return jwt.encode(claims, derive_key(psk, salt), algorithm=ALGORITHM, headers=headers)


class Verifier:
    """Checks ``Authorization: Bearer <jwt>`` values against the PSK.

    ``verify`` derives the key of a salt it has not seen on the spot (tens of milliseconds). A server
    that must not block does the cheap checks with ``parse``, derives a missing key elsewhere
    (``derive_key`` with ``psk``), ``check``s the token with it and then ``remember``s it.
    """

    def __init__(self, psk: str) -> None:
        self._keys = _KeyCache(psk)

    @property
    def psk(self) -> str:
        return self._keys.psk

    def verify(self, authorization: str | None) -> dict[str, Any]:
        token, salt = self.parse(authorization)
        return self.claims(token, salt)

    def decode(self, token: str) -> dict[str, Any]:
        return self.verify(f"Bearer {token}")

    def parse(self, authorization: str | None) -> tuple[str, bytes]:
        """The token and its salt; raises AuthError for anything that needs no key to refuse."""
        if not authorization:
            raise AuthError("missing Authorization header")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Authorization must be 'Bearer <token>'")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise AuthError(f"malformed token: {e}") from None
        if header.get("alg") != ALGORITHM:
            raise AuthError(f"token algorithm must be {ALGORITHM}")
        try:
            salt = base64.b64decode(str(header.get("salt", "")), validate=True)
        except (binascii.Error, ValueError):
            raise AuthError("token header has no valid salt") from None
        if len(salt) < 8:
            raise AuthError("token header has no valid salt")
        return token, salt

    def knows(self, salt: bytes) -> bool:
        return self._keys.get(salt) is not None

    def remember(self, salt: bytes, key: bytes) -> None:
        self._keys.put(salt, key)

    def claims(self, token: str, salt: bytes) -> dict[str, Any]:
        """The claims of a token that passed ``parse``; derives its key first if it is not known."""
        return self.check(token, self._keys.key(salt))

    def check(self, token: str, key: bytes) -> dict[str, Any]:
        """The claims of a token signed with ``key``; raises AuthError."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                leeway=LEEWAY,
                options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError as e:
            raise AuthError(f"invalid token: {e}") from None
        return claims


class TokenSource:
    """A client's token: reused until shortly before it expires, then renewed."""

    def __init__(self, psk: str, clock: Callable[[], float] = time.time) -> None:
        self._psk = psk
        self._clock = clock
        self._token = ""
        self._expires = 0.0

    def authorization(self) -> str:
        now = self._clock()
        if now >= self._expires - RENEW_BEFORE:
            self._token = encode({}, self._psk, now=now)
            self._expires = now + TOKEN_LIFETIME
        return f"Bearer {self._token}"
