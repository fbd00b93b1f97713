"""Hot reload: the gateway follows edits of its YAML while serving; invalid edits are rejected."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from router.app import create_app
from router.config import load_config
from tests.e2e.conftest import CLIENT_KEY, DEFAULT_RULES, ENV, write_config
from tests.servers import serve

FAQ = {"model": "auto", "messages": [{"role": "user", "content": "How do I reset my online banking password?"}]}
HEADERS = {"authorization": f"Bearer {CLIENT_KEY}"}


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_edit_applies_without_restart_and_invalid_edit_keeps_old_rules(upstreams: tuple[str, str], tmp_path: Path) -> None:
    mid, flagship = upstreams
    path = tmp_path / "router.yaml"
    write_config(path, mid, flagship)
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=True)
    with serve(app) as url:
        def tier() -> str:
            response = httpx.post(f"{url}/v1/chat/completions", json=FAQ, headers=HEADERS)
            assert response.status_code == 200
            return response.headers["x-router-tier"]

        def version() -> str:
            return httpx.get(f"{url}/readyz").json()["config_version"]

        assert tier() == "mid"
        first = version()

        write_config(path, mid, flagship, DEFAULT_RULES.replace("- name: default-mid\n    tier: mid", "- name: default-flagship\n    tier: flagship"))
        assert wait_for(lambda: version() != first), "the edit was not picked up"
        assert tier() == "flagship"
        second = version()

        path.write_text(path.read_text().replace("- name: default-flagship\n    tier: flagship", "- name: default-flagship\n    tier: nowhere"))
        assert wait_for(lambda: httpx.get(f"{url}/readyz").json()["last_reload_error"] is not None)
        ready = httpx.get(f"{url}/readyz").json()
        assert "rules[3] 'default-flagship'.tier: unknown tier 'nowhere'; known: ['flagship', 'mid']" in ready["last_reload_error"]
        assert ready["config_version"] == second
        assert tier() == "flagship"

        path.write_text("rules: [unclosed\n")
        assert wait_for(lambda: "invalid YAML" in (httpx.get(f"{url}/readyz").json()["last_reload_error"] or ""))
        assert tier() == "flagship"
