"""JWT bearer tokens with the plan's claims: minted by `tpmon token`, verified on every API call.

Verification accepts exactly the configured algorithm (so `alg: none` and HS/RS confusion are
refused before any key is used) and requires sub, role, iat and exp. A verified token is
cached until it expires: HS256 verification costs tens of microseconds, which the snapshot
endpoint's budget per request cannot carry, while a dictionary lookup can.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt

from controller.security.principal import ALL_STATIONS, Permission, Principal, UnknownRole, permissions_of

REQUIRED_CLAIMS = ("sub", "role", "iat", "exp")
LEEWAY_S = 5            # clock skew tolerated between the host that minted a token and this one
CACHE_ENTRIES = 4096    # distinct live tokens remembered; a full cache is simply cleared


class TokenRejected(Exception):
    """The token cannot be used; the message is the reason given to the client (never a secret)."""


@dataclass(frozen=True)
class TokenKeys:
    algorithm: str
    verify_key: bytes | str          # the HMAC secret, or a PEM public key
    signing_key: bytes | str | None  # the HMAC secret, or a PEM private key (None: cannot mint)

    @classmethod
    def from_files(cls, algorithm: str, secret: bytes | None = None, public_key_file: Path | None = None,
                   private_key_file: Path | None = None) -> TokenKeys:
        if algorithm.startswith("HS"):
            if secret is None:
                raise ValueError(f"{algorithm} needs a shared secret")
            return cls(algorithm, secret, secret)
        public = public_key_file.read_text() if public_key_file else ""
        private = private_key_file.read_text() if private_key_file else None
        return cls(algorithm, public, private)


def mint(keys: TokenKeys, subject: str, role: str, stations: Iterable[str] | None = None,
         ttl_s: float = 3600, permissions: Iterable[str] | None = None, now: float | None = None) -> str:
    """A token with the plan's claims; `stations` None means every station (`["*"]`)."""
    if keys.signing_key is None:
        raise ValueError(f"minting {keys.algorithm} tokens needs the private key")
    granted = permissions_of(role)
    if permissions is not None:
        wanted = set(permissions)
        unknown = wanted - {p.value for p in Permission}
        if unknown:
            raise ValueError(f"unknown permission {', '.join(sorted(unknown))}")
        granted = frozenset(p for p in granted if p.value in wanted)
    issued = int(time.time() if now is None else now)
    claims = {"sub": subject, "role": role, "permissions": sorted(p.value for p in granted),
              "stations": [ALL_STATIONS] if stations is None else sorted(stations),
              "iat": issued, "exp": issued + int(ttl_s)}
    return jwt.encode(claims, keys.signing_key, algorithm=keys.algorithm)


class TokenVerifier:
    def __init__(self, keys: TokenKeys, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.clock = clock
        self._cache: dict[str, Principal] = {}
        self._by_header: dict[str, Principal] = {}

    def verify_header(self, header: str) -> Principal:
        """The principal of an `Authorization: Bearer <token>` value (the per-request fast path).

        The cache is keyed by the whole header value, so a known token costs one lookup and
        no string slicing; anything else goes through the checks in `verify`.
        """
        cached = self._by_header.get(header)
        if cached is not None and cached.expires_at + LEEWAY_S > self.clock():
            return cached
        if header[:7].lower() != "bearer " or not header[7:].strip():
            raise TokenRejected("the Authorization header must be 'Bearer <token>'")
        principal = self.verify(header[7:].strip())
        if len(self._by_header) >= CACHE_ENTRIES:
            self._by_header.clear()
        self._by_header[header] = principal
        return principal

    def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + LEEWAY_S > self.clock():
                return cached
            del self._cache[token]
            raise TokenRejected("the token has expired")
        principal = self._decode(token)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[token] = principal
        return principal

    def _decode(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("the token is not a well-formed JWT") from None
        alg = str(header.get("alg", ""))
        if alg.lower() == "none":
            raise TokenRejected("unsigned tokens (alg none) are not accepted")
        if alg != self.keys.algorithm:
            raise TokenRejected(f"token algorithm {alg or '(missing)'} is not accepted; "
                                f"this controller expects {self.keys.algorithm}")
        try:
            # exp and iat are checked below against the injected clock, so tests can move time.
            claims = jwt.decode(token, self.keys.verify_key, algorithms=[self.keys.algorithm],
                                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False,
                                         "verify_iat": False, "verify_nbf": False})
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise TokenRejected("the token cannot be decoded") from None
        return self._principal(claims)

    def _principal(self, claims: dict) -> Principal:
        now = self.clock()
        exp, iat = claims["exp"], claims["iat"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (exp, iat)):
            raise TokenRejected("the token's exp and iat must be numbers (seconds since the epoch)")
        if exp + LEEWAY_S <= now:
            raise TokenRejected("the token has expired")
        if iat - LEEWAY_S > now:
            raise TokenRejected("the token was issued in the future (check the clocks)")
        sub, role = claims["sub"], claims["role"]
        perms, stations = claims.get("permissions"), claims.get("stations")
        if not isinstance(sub, str) or not sub:
            raise TokenRejected("the token's sub must be a non-empty string")
        for name, value in (("permissions", perms), ("stations", stations)):
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise TokenRejected(f"the token's {name} claim must be a list of strings")
        if stations is None:
            raise TokenRejected("the token lacks the 'stations' claim (use [\"*\"] for every station)")
        try:
            return Principal.from_claims(sub, str(role), perms, stations, exp)
        except UnknownRole as exc:
            raise TokenRejected(str(exc)) from None
