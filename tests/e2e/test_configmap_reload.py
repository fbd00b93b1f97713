"""Hot reload of a config mounted from a Kubernetes ConfigMap (deploy/k8s/deployment.yaml).

The kubelet lays a ConfigMap out as ``router.yaml -> ..data/router.yaml`` and ``..data -> ..<timestamp>``,
and applies an update by writing a new timestamped directory, swapping ``..data`` to it in one rename
and deleting the old directory. ``serve`` must follow the swap (before: it resolved the symlink at
start, never saw an update, and reported a missing file once the old directory was deleted).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import ENV, write_config
from tests.e2e.processes import gateway_process, wait_until


def publish(mount: Path, files: dict[str, str], generation: int) -> None:
    """Write ``files`` as the kubelet does: a new timestamped dir, then an atomic ``..data`` swap."""
    version = mount / f"..2026_12_02_00_00_0{generation}"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
    tmp = mount / "..data_tmp"
    tmp.symlink_to(version.name)
    old = (mount / "..data").resolve() if (mount / "..data").exists() else None
    os.replace(tmp, mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(old)


def test_a_configmap_update_is_applied_and_the_old_directory_may_go(upstreams: tuple[str, str], tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    write_config(staging / "router.yaml", *upstreams)
    original = (staging / "router.yaml").read_text()
    tasks = (Path(__file__).resolve().parents[2] / "config" / "tasks.yaml").read_text()
    mount = tmp_path / "etc-llm-router"
    mount.mkdir()
    local = original.replace(str(Path(__file__).resolve().parents[2] / "config" / "tasks.yaml"), "tasks.yaml")
    publish(mount, {"router.yaml": local, "tasks.yaml": tasks}, 1)
    with gateway_process(mount / "router.yaml", ENV, cwd=tmp_path) as gateway:
        first = httpx.get(f"{gateway.url}/readyz").json()["config_version"]
        edited = local.replace("- name: default-mid\n    tier: mid", "- name: default-flagship\n    tier: flagship")
        assert edited != local
        publish(mount, {"router.yaml": edited, "tasks.yaml": tasks}, 2)
        wait_until(lambda: httpx.get(f"{gateway.url}/readyz").json()["config_version"] != first, 10, "the update")
        time.sleep(1.0)  # the old directory's deletion is an event too: it must not break anything
        ready = httpx.get(f"{gateway.url}/readyz").json()
    assert ready["last_reload_error"] is None
    assert ready["config_version"] != first
