from __future__ import annotations

import hashlib

import pytest

from router.auth import ANONYMOUS, KeyRing
from router.config import AuthConfig
from router.errors import AuthenticationError


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def test_hashed_env_and_list_keys() -> None:
    config = AuthConfig.model_validate({
        "keys_env": "KEYS",
        "keys": [{"name": "acme-prod", "sha256": sha("sk-acme"), "tenant": "acme", "admin": True},
                 {"name": "ci", "key_env": "CI_KEY"}],
    })
    ring = KeyRing.from_config(config, {"KEYS": "sk-one, sk-two:beta,", "CI_KEY": "sk-ci"})
    assert ring.enabled
    acme = ring.authenticate("Bearer sk-acme")
    assert (acme.name, acme.tenant, acme.admin) == ("acme-prod", "acme", True)
    assert ring.authenticate("bearer sk-ci").name == "ci"
    two = ring.authenticate("Bearer sk-two")
    assert two.tenant == "beta" and two.name == f"key-{sha('sk-two')[:8]}" and "sk-two" not in two.name
    assert ring.authenticate("Bearer sk-one").tenant is None


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer sk-nope", "Basic sk-acme", "sk-acme"])
def test_rejections(header: str | None) -> None:
    ring = KeyRing.from_config(AuthConfig.model_validate({"keys": [{"name": "a", "sha256": sha("sk-acme")}]}), {})
    with pytest.raises(AuthenticationError) as info:
        ring.authenticate(header)
    assert info.value.status_code == 401
    assert "sk-acme" not in info.value.message


def test_no_keys_means_auth_off() -> None:
    ring = KeyRing.from_config(AuthConfig(keys_env="UNSET"), {})
    assert not ring.enabled
    assert ring.authenticate(None) is ANONYMOUS
