"""Hot reload: the gateway follows edits of its YAML while serving; invalid edits are rejected."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from router.app import create_app
from router.config import load_config
from tests.e2e.conftest import CLIENT_KEY, DEFAULT_RULES, ENV, write_config
from tests.servers import free_port, serve

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


def test_a_reload_is_read_off_the_event_loop(
    upstreams: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a config (YAML, model, cue automaton: about 0.1 s) must not stall requests in flight:
    while the new file is still being read, the old config keeps serving."""
    import router.gateway

    mid, flagship = upstreams
    path = tmp_path / "router.yaml"
    write_config(path, mid, flagship)
    reading, release = threading.Event(), threading.Event()

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        reading.set()
        assert release.wait(30), "the test never released the reload"
        return load_config(*args, **kwargs)

    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=True)
    monkeypatch.setattr(router.gateway, "load_config", slow_load)
    with serve(app) as url:
        first = httpx.get(f"{url}/readyz").json()["config_version"]
        write_config(path, mid, flagship, DEFAULT_RULES.replace("- name: default-mid\n    tier: mid", "- name: default-flagship\n    tier: flagship"))
        assert reading.wait(10), "the edit was not picked up"
        try:
            response = httpx.post(f"{url}/v1/chat/completions", json=FAQ, headers=HEADERS, timeout=5)
        finally:
            release.set()
        assert response.status_code == 200
        assert response.headers["x-router-tier"] == "mid"  # the old rules, while the new file is read
        assert wait_for(lambda: httpx.get(f"{url}/readyz").json()["config_version"] != first)
        response = httpx.post(f"{url}/v1/chat/completions", json=FAQ, headers=HEADERS)
        assert response.headers["x-router-tier"] == "flagship"


def test_undoing_a_bad_edit_clears_the_reload_error(upstreams: tuple[str, str], tmp_path: Path) -> None:
    """Item 19: restoring the serving file byte for byte must stop the alert."""
    mid, flagship = upstreams
    path = tmp_path / "router.yaml"
    write_config(path, mid, flagship)
    good = path.read_bytes()
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=True)
    with serve(app) as url:
        def reload_state() -> tuple[str | None, str]:
            error = httpx.get(f"{url}/readyz").json()["last_reload_error"]
            metric = next(line for line in httpx.get(f"{url}/metrics").text.splitlines()
                          if line.startswith("llm_router_config_last_reload_successful"))
            return error, metric.split()[-1]

        path.write_text("rules: [unclosed\n")
        assert wait_for(lambda: reload_state() != (None, "1.0")), "the bad edit was not noticed"
        assert reload_state()[1] == "0.0"
        path.write_bytes(good)
        assert wait_for(lambda: reload_state() == (None, "1.0")), reload_state()


def test_configmap_symlink_swap_is_applied(upstreams: tuple[str, str], tmp_path: Path) -> None:
    """Item 17: a Kubernetes ConfigMap mounts router.yaml -> ..data/router.yaml, ..data -> ..<timestamp>;
    an update swaps ..data to a new directory and deletes the old one. `serve` must follow the link."""
    mid, flagship = upstreams
    mount = tmp_path / "mount"
    first = mount / "..2026_01_01_00_00_00.1"
    first.mkdir(parents=True)
    write_config(first / "router.yaml", mid, flagship)
    (mount / "..data").symlink_to(first.name)
    (mount / "router.yaml").symlink_to("..data/router.yaml")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(mount / "router.yaml"), "--port", str(port)],
        env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> dict[str, object] | None:
            try:
                return httpx.get(f"{url}/readyz").json()
            except httpx.TransportError:
                return None

        assert wait_for(lambda: ready() is not None, timeout=30), "the gateway did not start"
        version = ready()["config_version"]  # type: ignore[index]

        second = mount / "..2026_01_01_00_01_00.2"
        second.mkdir()
        write_config(second / "router.yaml", mid, flagship,
                     DEFAULT_RULES.replace("- name: default-mid\n    tier: mid", "- name: default-flagship\n    tier: flagship"))
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")  # the kubelet's atomic swap
        shutil.rmtree(first)

        assert wait_for(lambda: (ready() or {}).get("config_version") != version), ready()
        assert ready()["last_reload_error"] is None  # type: ignore[index]
        response = httpx.post(f"{url}/v1/chat/completions", json=FAQ, headers=HEADERS)
        assert response.headers["x-router-tier"] == "flagship"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_reload_removing_a_backend_lets_its_streams_finish(upstreams: tuple[str, str], tmp_path: Path) -> None:
    """Item 18: a stream on a backend that a reload removes ends on the config it started with; its
    mid-stream failure reaches the client as an error event (it was a KeyError and a cut connection)."""
    mid, flagship = upstreams
    path = tmp_path / "router.yaml"
    spare = "  spare:\n    tier: mid\n    base_url: {mid}/v1\n    model: sim-mid-7b\n    context_window: 32768\n".format(mid=mid)
    write_config(path, mid, flagship)
    path.write_text(path.read_text().replace("  flagship:\n", spare + "  flagship:\n", 1))
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=False)
    with serve(app) as url, httpx.Client(base_url=mid) as sim:
        sim.post("/_sim/faults", json={"stall_after_chunks": 3, "stall_seconds": 1.0, "drop_after_chunks": 5, "times": 1}).raise_for_status()
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)
            stream = client.chat.completions.create(model="spare", messages=FAQ["messages"], stream=True, max_tokens=40)
            first = next(iter(stream))
            assert first.choices[0].delta.role == "assistant"
            write_config(path, mid, flagship)  # `spare` is gone
            assert app.state.gateway.reload()
            assert "spare" not in app.state.gateway.state.backends
            with pytest.raises(openai.APIError) as caught:
                list(stream)
            assert "closed the connection" in caught.value.message
            # The next request sees the new config.
            assert httpx.post(f"{url}/v1/chat/completions", json={**FAQ, "model": "spare"}, headers=HEADERS).status_code == 404
        finally:
            sim.delete("/_sim/faults").raise_for_status()


def test_a_model_file_swap_reloads_and_a_corrupt_one_keeps_the_old_model(upstreams: tuple[str, str], tmp_path: Path) -> None:
    mid, flagship = upstreams
    models = tmp_path / "models"
    models.mkdir()
    shipped = Path(__file__).resolve().parents[2] / "config" / "models" / "routing-model.npz"
    shutil.copy(shipped, models / "m.npz")
    path = tmp_path / "router.yaml"
    write_config(path, mid, flagship)
    path.write_text(path.read_text().replace("classifier:\n", "classifier:\n  model: models/m.npz\n"))
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=True)
    with serve(app) as url:
        def ready() -> dict:
            return httpx.get(f"{url}/readyz").json()

        first = ready()["config_version"]
        (models / "m.npz").write_bytes(b"PK\x03\x04 torn")
        assert wait_for(lambda: ready()["last_reload_error"] is not None), "the corrupt model was not noticed"
        assert "classifier.model" in ready()["last_reload_error"]
        assert ready()["config_version"] == first
        response = httpx.post(f"{url}/v1/chat/completions", json=FAQ, headers=HEADERS)
        assert response.status_code == 200  # still serving on the model it had

        shutil.copy(shipped, models / "m.npz")
        assert wait_for(lambda: ready()["last_reload_error"] is None), "restoring the model did not clear the error"
        assert ready()["config_version"] == first  # the same bytes: the same version
