"""The running gateway: the current ``Pipeline``, its upstream clients, and config hot reload.

A reload validates the whole new config first and swaps the pipeline in one assignment, so
requests see either the old config or the new one, never a mix. An invalid edit is logged and
the previous config keeps serving. Upstream clients of unchanged backends are kept (their
keep-alive pools stay warm); replaced ones are closed once their in-flight requests are done.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from router.auth import KeyRing
from router.classify import Classifier
from router.config import ConfigError, GatewayConfig, load_config
from router.metrics import Metrics
from router.pipeline import Pipeline
from router.policy import fallback_routes
from router.response_store import ResponseStore
from router.rules import EMBEDDINGS_DEFAULT, EMBEDDINGS_TASK, REQUESTED_MODEL
from router.state import PolicyState
from router.upstream import create_provider
from router.upstream.base import Provider

log = logging.getLogger("router.gateway")

#: Files whose change reloads the config: the YAML files and the classifier's model.
_CONFIG_SUFFIXES = (".yaml", ".yml", ".npz")
#: Set by ``serve --workers N`` for its workers: N processes share this machine's budgets.
WORKERS_ENV = "LLM_ROUTER_WORKERS"
#: How often a worker publishes its metrics when several share them (a scrape also publishes its own).
_PUBLISH_SECONDS = 1.0
#: At shutdown, the longest wait for cancelled requests to be accounted before the ledger closes.
_SETTLE_SECONDS = 2.0


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        path: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self._environ = os.environ if environ is None else environ
        self._retiring: set[asyncio.Task[None]] = set()
        workers = int(self._environ.get(WORKERS_ENV) or 1)
        self.state = PolicyState(
            config,
            on_breaker=lambda backend, state: self.metrics.breaker_state(backend, state),
            on_state=lambda up: self.metrics.state_backend(up),
            workers=workers,
        )
        self._scraper: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health_checks: list[asyncio.Task[None]] = []
        self._publisher: asyncio.Task[None] | None = None
        keyring = KeyRing.from_config(config.auth, self._environ)
        self.metrics = Metrics(**_label_sets(config, keyring), version=config.digest)
        if self.state.store is not None:
            self.metrics.state_backend(True)
        self.pipeline = self._build(config, {}, keyring)
        #: Stored Responses; its file and TTL are read at start-up (a reload does not move them).
        self.responses = ResponseStore(config.responses.store_path, config.responses.ttl_seconds)
        self.responses.shared = self.state.store
        self.reloads = {"success": 0, "failure": 0}
        self.last_reload_error: str | None = None

    @property
    def config(self) -> GatewayConfig:
        return self.pipeline.config

    def _build(
        self, config: GatewayConfig, current: Mapping[str, Provider], keyring: KeyRing, classifier: Classifier | None = None
    ) -> Pipeline:
        old = self.pipeline.config.backends if current else {}
        providers = {
            name: current[name] if name in current and old.get(name) == backend else create_provider(name, backend)
            for name, backend in config.backends.items()
        }
        return Pipeline(config, providers, keyring, self.state, self.metrics, classifier)

    def reload(self) -> bool:
        """Re-read the config file; return True if a new config is now serving."""
        return self._apply(self._read(self.path)) if self.path is not None else False

    def _read(self, path: Path) -> tuple[GatewayConfig, Classifier | None] | ConfigError:
        """The slow, side-effect-free half of a reload: parse and check the config file, load its model
        and compile its cues (about 0.1 s; not when the file is the one serving). The watcher runs it
        off the event loop."""
        try:
            config = load_config(path, self._environ)
        except ConfigError as exc:
            return exc
        if config.digest == self.config.digest:
            return config, None
        return config, Classifier(config.classifier.vocabulary, config.classifier.model)

    def _apply(self, loaded: tuple[GatewayConfig, Classifier | None] | ConfigError) -> bool:
        """Serve what ``_read`` loaded (on the event loop), or keep the current config if it failed."""
        if isinstance(loaded, ConfigError):
            self.reloads["failure"] += 1
            self.metrics.config_reload(False)
            self.last_reload_error = str(loaded)
            log.error("config reload rejected, still serving version %s:\n%s", self.config.digest, loaded)
            return False
        config, classifier = loaded
        if config.digest == self.config.digest:
            if self.last_reload_error is not None:  # a bad edit was undone: the file on disk serves again
                self.last_reload_error = None
                self.metrics.config_reload(True)
                log.info("config file is valid again (version %s)", config.digest)
            return False
        previous = self.pipeline
        self.state.reconfigure(config)
        keyring = KeyRing.from_config(config.auth, self._environ)
        self.metrics.config_reload(True)
        self.metrics.configure(**_label_sets(config, keyring), version=config.digest)
        self.pipeline = self._build(config, previous.providers, keyring, classifier)
        if self._scraper is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.state.start_pollers, self._scraper)
            self._loop.call_soon_threadsafe(self._start_health_checks)
        self.reloads["success"] += 1
        self.last_reload_error = None
        self._retire([p for name, p in previous.providers.items() if self.pipeline.providers.get(name) is not p])
        log.info("config reloaded: version %s -> %s", previous.config.digest, config.digest)
        return True

    def start(self) -> None:
        """Start background work that needs the event loop: capacity scrapers, health checks and,
        with several workers, publishing this worker's metrics for the others' scrapes."""
        self._loop = asyncio.get_running_loop()
        self._scraper = aiohttp.ClientSession()
        self.state.start_pollers(self._scraper)
        self._start_health_checks()
        if self.metrics.multiprocess_dir is not None:
            self._publisher = self._loop.create_task(self._publish_metrics())

    async def _publish_metrics(self) -> None:
        while True:
            await asyncio.sleep(_PUBLISH_SECONDS)
            self.metrics.publish()

    def _start_health_checks(self) -> None:
        for task in self._health_checks:
            task.cancel()
        self._health_checks = [
            asyncio.get_running_loop().create_task(self._health_check(provider))
            for provider in self.pipeline.providers.values()
            if provider.config.health_check is not None
        ]

    async def _health_check(self, provider: Provider) -> None:
        """Probe a backend on an interval; results count like requests in its circuit breaker.

        A probe goes only where the breaker admits one, so an open breaker's cool-down is kept and,
        once it is over, the health check (not a client request) can be the half-open probe.
        """
        check = provider.config.health_check
        assert check is not None
        while True:
            await asyncio.sleep(check.interval_seconds)
            backend = self.state.backends.get(provider.name)
            if backend is None:  # removed by a reload; this task is being replaced
                return
            breaker = backend.breaker
            if not breaker.allow():
                continue
            if await provider.healthy(check.path, check.timeout_seconds):
                breaker.record_success()
            else:
                log.warning("health check of backend %s failed", provider.name)
                breaker.record_failure()

    async def watch(self) -> None:
        """Reload whenever a YAML file next to the config changes (editors often replace files).

        The path is watched as given, never resolved: a Kubernetes ConfigMap mounts the file as a
        symlink through ``..data``, which the kubelet swaps to a new directory (the old one is
        deleted), so a change of a ``..``-named entry is a change of the config too.
        """
        path = self.path
        if path is None:
            return
        from watchfiles import awatch

        # The watcher thread wakes every `step` ms (and takes the GIL) even when nothing changed: half
        # a second keeps reloads within a second at a tenth of watchfiles' default wake-ups.
        directory = path.absolute().parent
        async for changes in awatch(directory, debounce=200, step=500):
            if any(_is_config_change(directory, changed) for _, changed in changes):
                self._apply(await asyncio.to_thread(self._read, path))

    async def _settle(self) -> None:
        """Give requests the server just cancelled (its drain deadline passed) a moment to send their
        error event and be accounted, so their ledger rows are written before the ledger closes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SETTLE_SECONDS
        while any(state.load.in_flight for state in self.state.backends.values()) and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def _retire(self, providers: list[Provider]) -> None:
        if not providers:
            return
        grace = max(p.config.timeouts.total for p in providers)

        async def close_later() -> None:
            try:
                await asyncio.sleep(grace)
            finally:  # also when the gateway shuts down first
                for provider in providers:
                    await provider.aclose()

        def schedule() -> None:
            task = asyncio.get_running_loop().create_task(close_later())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

        if self._loop is not None:
            self._loop.call_soon_threadsafe(schedule)  # reload() may run outside the event loop (SIGHUP, tests)

    async def aclose(self) -> None:
        await self._settle()
        tasks = [*self._retiring, *self._health_checks, *([self._publisher] if self._publisher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for provider in self.pipeline.providers.values():
            await provider.aclose()
        await self.state.aclose()
        self.responses.close()
        self.metrics.close()
        if self._scraper is not None:
            await self._scraper.close()


def _is_config_change(directory: Path, changed: str) -> bool:
    """A YAML file, or the ConfigMap machinery (``..data`` and its ``..<timestamp>`` targets) in ``directory``."""
    if changed.endswith(_CONFIG_SUFFIXES):
        return True
    path = Path(changed)
    if not path.is_relative_to(directory):
        return False
    parts = path.relative_to(directory).parts
    return bool(parts) and parts[0].startswith("..")


def _label_sets(config: GatewayConfig, keyring: KeyRing) -> dict[str, Any]:
    """The closed label sets metrics may use: every name the config (and its keys) can produce."""
    budget_tenants = (limit.name for limit in config.policy.budgets.limits if limit.scope == "tenant" and limit.name)
    tenants = {*keyring.tenants, *budget_tenants}
    return {
        "backends": list(config.backends),
        "tiers": list(config.tiers),
        "tenants": sorted(tenants),
        "tasks": [*config.classifier.vocabulary.tasks, EMBEDDINGS_TASK],
        "rules": [rule.name for rule in config.rules] + [REQUESTED_MODEL, EMBEDDINGS_DEFAULT],
        "keys": sorted(keyring.names),
        "routes": sorted(fallback_routes(config)),
    }
