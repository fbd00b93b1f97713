"""Client API keys: ``Authorization: Bearer <key>`` -> the key's name and tenant.

Keys are held only as SHA-256 digests, so neither the config nor memory dumps carry them
and the name (never the key) is what logs, metrics and rules see.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from router.config import AuthConfig
from router.errors import AuthenticationError

log = logging.getLogger("router.auth")


@dataclass(frozen=True, slots=True)
class ClientKey:
    name: str
    tenant: str | None = None
    admin: bool = False


ANONYMOUS = ClientKey(name="anonymous")


class KeyRing:
    """The accepted client keys. Empty means auth is off and every caller is ``ANONYMOUS``."""

    def __init__(self, keys: Mapping[str, ClientKey]) -> None:
        self._by_digest = dict(keys)

    @classmethod
    def from_config(cls, config: AuthConfig, environ: Mapping[str, str]) -> KeyRing:
        keys: dict[str, ClientKey] = {}
        for entry in config.keys:
            if entry.sha256 is not None:
                digest = entry.sha256.lower()
            else:
                secret = environ.get(entry.key_env or "", "")
                if not secret:
                    log.warning("auth.keys %s: environment variable %s is empty; key disabled", entry.name, entry.key_env)
                    continue
                digest = _digest(secret)
            keys[digest] = ClientKey(entry.name, entry.tenant, entry.admin)
        if config.keys_env:
            for item in environ.get(config.keys_env, "").split(","):
                secret, _, tenant = item.strip().partition(":")
                if secret:
                    digest = _digest(secret)
                    keys[digest] = ClientKey(f"key-{digest[:8]}", tenant or None)
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    @property
    def names(self) -> set[str]:
        return {key.name for key in self._by_digest.values()}

    @property
    def tenants(self) -> set[str]:
        return {key.tenant for key in self._by_digest.values() if key.tenant}

    def authenticate(self, authorization: str | None) -> ClientKey:
        if not self._by_digest:
            return ANONYMOUS
        if not authorization:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, secret = authorization.partition(" ")
        key = self._by_digest.get(_digest(secret.strip())) if scheme.lower() == "bearer" else None
        if key is None:
            raise AuthenticationError("Incorrect API key provided.")
        return key


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
