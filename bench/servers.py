"""The processes under test: the mock upstream, llm-router and LiteLLM proxy, each a context manager.

Each server runs in its own session (process group), so stopping it also stops its uvicorn workers,
and writes its output to ``<log_dir>/<name>.log``; a server that dies or never becomes ready raises
``ServerError`` with the tail of that log.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from bench.mock_upstream import MockConfig

REPO = Path(__file__).resolve().parent.parent
LITELLM_VENV = Path.home() / ".cache" / "llm-router-bench" / "litellm-venv"
#: 1.106 is the version the issue measured; later 1.106.x pin dependency versions PyPI may not have yet.
LITELLM_SPEC = "litellm[proxy]==1.106.2"


class ServerError(RuntimeError):
    """A server could not be installed, started or made ready."""


@dataclass(frozen=True)
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str  #: ``http://127.0.0.1:<port>``
    model: str  #: The model name to send it.
    log: Path
    path: str = "/v1/chat/completions"  #: Where the load goes (``/v1/messages``: Anthropic's Messages API).

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}{self.path}"


@contextmanager
def mock_upstream(config: MockConfig, log_dir: Path) -> Iterator[Server]:
    """The mock, on a port it picks itself and reports on its first line of output."""
    cmd = [sys.executable, "-m", "bench.mock_upstream", "--port", "0", "--chunks", str(config.chunks)]
    cmd += ["--ttft", str(config.ttft), "--chunk-delay", str(config.chunk_delay)]
    log = log_dir / "mock.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=out, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise ServerError(f"the mock upstream exited before listening:\n{_tail(log)}")
        port = orjson.loads(line)["port"]
        server = Server("direct", proc, f"http://127.0.0.1:{port}", "mock-mid", log)
        _wait_ready(server, "/health", timeout=10.0)
        yield server
    finally:
        _stop(proc)


def with_claude(config: Path, dest: Path) -> Path:
    """A copy of ``config`` (router.yaml) in ``dest`` with its commented Claude backend and aliases enabled."""
    lines = config.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("  # claude:")))
    end = lines.index("", start)
    enabled = [line.replace("  # ", "  ", 1) for line in lines[start:end]]
    aliases = [line.replace("  # ", "  ", 1) if line.startswith("  # claude-") else line for line in lines[end:]]
    path = dest / config.name
    path.write_text("\n".join([*lines[:start], *enabled, *aliases]) + "\n")
    (dest / "tasks.yaml").write_text((config.parent / "tasks.yaml").read_text())
    shutil.copytree(config.parent / "models", dest / "models", dirs_exist_ok=True)
    return path


@contextmanager
def llm_router(
    upstream: Server, log_dir: Path, workers: int = 2, *, claude: bool = False, messages: bool = False,
    config: Path | None = None, name: str | None = None, **extra_env: str,
) -> Iterator[Server]:
    """``llm-router serve --config config/router.yaml`` (or ``config``) with both tiers pointed at the
    mock, auth off, and ``extra_env`` (e.g. ``REDIS_URL``).

    It runs in ``log_dir``, so files it writes relative to its working directory (the spend ledger)
    land there rather than in the repo. ``claude``: the config's Claude backend is enabled (a
    ``kind: anthropic`` backend on the mock's ``/v1/messages``) and every request is sent to it, so
    each one is translated to the Messages API and back. ``messages``: the load is Anthropic's
    Messages API on ``/v1/messages``, translated to chat completions for the (OpenAI-compatible) mid.
    """
    port = _free_port()
    script = Path(sys.executable).parent / "llm-router"
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "router"]
    default = with_claude(REPO / "config" / "router.yaml", log_dir) if claude else REPO / "config" / "router.yaml"
    cmd = [*entry, "serve", "--config", str(config or default), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(workers), "--log-level", "warning"]
    env = _env(
        MID_BASE_URL=f"{upstream.base_url}/v1",
        FLAGSHIP_BASE_URL=f"{upstream.base_url}/v1",
        MID_MODEL="mock-mid",
        FLAGSHIP_MODEL="mock-flagship",
        OPENAI_API_KEY="bench-dummy",
        ANTHROPIC_BASE_URL=upstream.base_url,
        ANTHROPIC_API_KEY="bench-dummy",
        CLAUDE_MODEL="mock-flagship",
        **extra_env,
    )
    env.pop("ROUTER_API_KEYS", None)
    name = name or ("llm-router-claude" if claude else "llm-router-messages" if messages else "llm-router")
    with _started(name, cmd, env, port, "claude" if claude else "auto", log_dir) as started:
        server = replace(started, path="/v1/messages") if messages else started
        _wait_ready(server, "/healthz", timeout=30.0)
        yield server


@contextmanager
def litellm_proxy(upstream: Server, log_dir: Path, spec: str = LITELLM_SPEC, workers: int = 2) -> Iterator[Server]:
    """LiteLLM proxy (installed into a throwaway venv outside the repo) with one model on the mock, no DB."""
    executable = ensure_litellm(spec)
    config = log_dir / "litellm_config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: mock-mid\n"
        "    litellm_params:\n"
        "      model: openai/mock-mid\n"
        f"      api_base: {upstream.base_url}/v1\n"
        "      api_key: bench-dummy\n"
    )
    # No access log, as llm-router runs here (uvicorn's logging config, passed through by LiteLLM).
    logging = log_dir / "litellm_logging.json"
    logging.write_text(
        '{"version": 1, "disable_existing_loggers": false, "loggers": {"uvicorn.access": {"level": "WARNING"}}}'
    )
    port = _free_port()
    cmd = [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", str(workers), "--log_config", str(logging)]
    # Auth off, like llm-router here; a local cost map, since there is no internet to fetch it from.
    env = _env(
        LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
    )
    for name in ("PYTHONPATH", "DATABASE_URL", "LITELLM_MASTER_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    with _started("litellm", cmd, env, port, "mock-mid", log_dir) as server:
        _wait_ready(server, "/health/liveliness", timeout=120.0)  # it imports for a long while
        yield server


@contextmanager
def redis_server(log_dir: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` (Debian's package) on a free loopback port; yields its URL."""
    port = _free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    log = log_dir / "redis.log"
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=log_dir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    except FileNotFoundError as exc:
        raise ServerError("redis-server is not installed: bash scripts/install-fleet-servers.sh") from exc
    try:
        deadline = time.monotonic() + 10
        while True:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise ServerError(f"redis-server did not start:\n{_tail(log)}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


def ensure_litellm(spec: str, venv: Path = LITELLM_VENV) -> Path:
    """Install ``spec`` into ``venv`` unless it is already there; return the ``litellm`` executable."""
    executable = venv / "bin" / "litellm"
    marker = venv / ".bench-spec"
    if executable.exists() and marker.exists() and marker.read_text() == spec:
        return executable
    print(f"installing {spec} into {venv} (once; takes a minute or two)", file=sys.stderr, flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", "-q", spec]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServerError(f"{' '.join(step)} failed:\n{done.stderr[-3000:]}")
    marker.write_text(spec)
    return executable


@contextmanager
def _started(name: str, cmd: list[str], env: dict[str, str], port: int, model: str, log_dir: Path) -> Iterator[Server]:
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=log_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Server(name, proc, f"http://127.0.0.1:{port}", model, log)
    finally:
        _stop(proc)


def _wait_ready(server: Server, path: str, timeout: float) -> None:
    """Poll ``GET path`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    host, port = server.base_url.removeprefix("http://").split(":")
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise ServerError(
                f"{server.name} exited with {server.proc.returncode} (log: {server.log}):\n{_tail(server.log)}"
            )
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise ServerError(
        f"{server.name} not ready on {server.base_url}{path} after {timeout:.0f}s "
        f"(log: {server.log}):\n{_tail(server.log)}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (workers included), SIGKILL it if it lingers."""
    with suppress(ProcessLookupError):  # it and all its workers are already gone
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _env(**extra: str) -> dict[str, str]:
    """The current environment, with the repo importable (so ``-m bench...`` works from anywhere)."""
    env: dict[str, str] = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
