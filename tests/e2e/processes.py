"""Gateways as real ``llm-router serve`` processes (several workers, several replicas), and the
real servers fleet mode needs (redis-server, PostgreSQL), each on a loopback port in a temp dir.

The binaries come from Debian's packages (``.ci/run`` installs them); without them the tests that
need them skip locally and fail in CI (``CI`` set), as the Prometheus tests do.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
POSTGRES_BIN = Path("/usr/lib/postgresql")


def binary(name: str, server: str) -> str:
    """The path of ``name``. Missing: skip where .ci/run could not install ``server`` and locally; fail in CI."""
    found = shutil.which(name)
    if found is None and POSTGRES_BIN.is_dir():  # Debian keeps initdb and pg_ctl off PATH
        candidates = sorted(POSTGRES_BIN.glob(f"*/bin/{name}"))
        found = str(candidates[-1]) if candidates else None
    if found is None:
        message = f"`{name}` is not installed: run scripts/install-fleet-servers.sh (Debian's {server} package)"
        if server.removesuffix("-server") in os.environ.get("LLM_ROUTER_SKIP_SERVERS", "").split(","):
            pytest.skip(f"SKIPPED ON PURPOSE, no way to install it here: {message}")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} not ready after {timeout}s")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextmanager
def gateway_process(config: Path, env: dict[str, str], *, workers: int = 1, cwd: Path | None = None) -> Iterator[Process]:
    """``llm-router serve --config config --workers N`` on a free port, ready when /readyz answers."""
    port = free_port()
    cwd = cwd or config.parent
    log = cwd / f"gateway-{port}.log"
    cmd = [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", str(port),
           "--workers", str(workers), "--log-level", "warning", "--log-format", "text"]
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    process = Process(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited with {proc.returncode}:\n{process.tail()}")
            try:
                if httpx.get(f"{process.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway not ready:\n{process.tail()}")
            time.sleep(0.05)
        if workers > 1:  # every worker must be up before the test hammers them
            time.sleep(1.0)
        yield process
    finally:
        process.stop()


@contextmanager
def redis_server(tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(binary("redis-server", "redis-server"), tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisServer:
    """A throwaway redis-server: no persistence, loopback only, its own port. Can be killed and restarted."""

    def __init__(self, executable: str, tmp: Path) -> None:
        self.executable = executable
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.tmp)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import redis

        def ping() -> bool:
            with redis.Redis(port=self.port, socket_timeout=0.5) as client:
                return bool(client.ping())

        wait_until(lambda: _quiet(ping), 10, "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _quiet(check: object) -> bool:
    import redis

    try:
        return bool(check())  # type: ignore[operator]
    except redis.RedisError:
        return False


@dataclass
class Postgres:
    url: str
    home: Path

    def stop(self) -> None:
        pg_ctl(self.home, "stop")

    def start(self) -> None:
        pg_ctl(self.home, "start")


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster (initdb in a temp dir, trust auth on loopback, its own port).

    Run as root (CI containers), the cluster belongs to the ``postgres`` (or ``nobody``) account,
    since PostgreSQL refuses to run as root; its directory is outside pytest's private tmp for that.
    """
    initdb = binary("initdb", "postgresql")
    home = Path(tempfile.mkdtemp(prefix="llm-router-pg-"))
    try:
        port = free_port()
        (home / "port").write_text(str(port))
        if os.geteuid() == 0:
            os.chown(home, *_pg_user())
        subprocess.run([initdb, "-D", str(home / "pgdata"), "-U", "router", "-A", "trust", "--no-sync"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_run_as())  # type: ignore[call-overload]
        server = Postgres(f"postgresql://router@127.0.0.1:{port}/postgres", home)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def pg_ctl(tmp: Path, action: str) -> None:
    executable = binary("pg_ctl", "postgresql")
    port = (tmp / "port").read_text()
    options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
    cmd = [executable, "-D", str(tmp / "pgdata"), "-w"]
    cmd += ["-o", options, "-l", str(tmp / "pg.log"), "start"] if action == "start" else ["-m", "immediate", "stop"]
    subprocess.run(cmd, check=action == "start", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   **_run_as())  # type: ignore[call-overload]


def _pg_user() -> tuple[int, int]:
    import pwd

    user = pwd.getpwnam("postgres") if _has_user("postgres") else pwd.getpwnam("nobody")
    return user.pw_uid, user.pw_gid


def _run_as() -> dict[str, int]:
    if os.geteuid() != 0:
        return {}
    uid, gid = _pg_user()
    return {"user": uid, "group": gid}


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
