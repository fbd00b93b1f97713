"""Dockerfile, docker-compose.yml, Prometheus and Grafana files: parsed and cross-checked (no Docker engine needed).

Every path they reference exists in the repo (or in the image, through the Dockerfile's COPY lines),
commands parse with the real CLI, ports agree from EXPOSE to the scrape config, and the dashboard
and alerts use only metrics that ``router.metrics`` defines.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry

from router import cli
from router.app import create_app
from router.config import ConfigError, load_config
from router.metrics import Metrics
from tests.servers import free_port, serve

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "config/grafana/dashboards/llm-router.json"
ALERTS = REPO / "config/prometheus/alerts.yml"
ENV = {"OPENAI_API_KEY": "sk-test", "ROUTER_API_KEYS": ""}


# --- Dockerfile -------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments and blanks dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation line"
    out = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def args_of(op: str, stage: list[tuple[str, str]] | None = None) -> list[str]:
    return [args for instruction, args in (stage if stage is not None else dockerfile()) if instruction == op]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def image_copies() -> list[tuple[list[str], str]]:
    """The final stage's ``COPY <src>... <dest>`` lines from the build context."""
    copies = []
    for args in args_of("COPY", final_stage()):
        if args.startswith("--from"):
            continue
        *sources, dest = args.split()
        copies.append((sources, dest))
    return copies


def image_path_to_repo(path: str) -> Path | None:
    """Where an (absolute) path of the final image comes from in the repo, via its COPY lines."""
    target = PurePosixPath(path)
    for sources, dest in image_copies():
        for source in sources:
            local = REPO / source
            if local.is_dir() and target.is_relative_to(dest):
                return local / target.relative_to(dest)
            if local.is_file() and target in (PurePosixPath(dest), PurePosixPath(dest) / local.name):
                return local
    return None


def dockerignore() -> list[str]:
    return [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def ignored(path: str) -> bool:
    path = path.rstrip("/")
    for pattern in dockerignore():
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatch(Path(path).name, pattern[3:]):
            return True
    return False


def resolved_base_images() -> list[str]:
    defaults = {}
    for args in args_of("ARG"):
        name, _, default = args.partition("=")
        defaults[name] = default
    images = []
    for args in args_of("FROM"):
        image = args.split()[0]
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image))
    return images


def parse_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Parse a command line with the real ``llm-router`` parser; start nothing."""
    parsed: list[argparse.Namespace] = []
    real_parse = argparse.ArgumentParser.parse_args

    def parse_args(self: argparse.ArgumentParser, *a: Any, **k: Any) -> argparse.Namespace:
        namespace: argparse.Namespace = real_parse(self, *a, **k)
        parsed.append(namespace)
        return namespace

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    for name in ("_serve", "_demo", "_check"):
        monkeypatch.setattr(cli, name, lambda *a, **k: 0)
    monkeypatch.setattr(logging, "basicConfig", lambda *a, **k: None)
    assert argv[0] == "llm-router", "the console script declared in pyproject.toml"
    cli.main(argv[1:])
    assert len(parsed) == 1
    return parsed[0]


def test_base_image_is_python_311_slim_in_every_stage() -> None:
    images = resolved_base_images()
    assert len(images) >= 1
    for image in images:
        assert image.startswith("python:3.11-slim"), image


def test_final_image_runs_as_non_root() -> None:
    users = args_of("USER", final_stage())
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    if user.isdigit():
        assert any(f"--uid {user}" in run for run in args_of("RUN", final_stage())), "the USER's uid is created"


def test_working_directory_is_writable_by_the_user() -> None:
    """The spend ledger (SQLite) is written to the working directory."""
    workdir = args_of("WORKDIR", final_stage())[-1]
    uid = args_of("USER", final_stage())[-1]
    assert any(f"chown {uid} {workdir}" in run for run in args_of("RUN", final_stage()))


def test_copied_sources_exist_and_are_not_dockerignored() -> None:
    for args in args_of("COPY"):
        if args.startswith("--from"):
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repo"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_package_metadata_files_are_in_the_build() -> None:
    """pip builds the wheel from pyproject.toml, which names a readme: both must be copied."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    copied = {source.rstrip("/") for args in args_of("COPY") if not args.startswith("--from") for source in args.split()[:-1]}
    assert "pyproject.toml" in copied
    assert project["readme"] in copied
    assert (REPO / project["readme"]).is_file()
    assert project["scripts"]["llm-router"] == "router.cli:main"


def test_cmd_serves_the_shipped_config_on_the_exposed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse_cli(exec_form(args_of("CMD", final_stage())[-1]), monkeypatch)
    assert args.command == "serve"
    assert args.host == "0.0.0.0"
    assert args_of("EXPOSE", final_stage()) == [str(args.port)]
    in_repo = image_path_to_repo(str(args.config))
    assert in_repo is not None and in_repo == REPO / "config/router.yaml" and in_repo.is_file()
    config = load_config(in_repo, ENV)  # the shipped config loads (its vocabulary file too)
    assert {"mid", "flagship"} <= set(config.tiers)


def test_healthcheck_probes_a_real_endpoint_and_fails_when_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # whatever the gateway writes to its working directory
    healthcheck = args_of("HEALTHCHECK", final_stage())[-1]
    assert "--interval=" in healthcheck and "--timeout=" in healthcheck
    argv = exec_form(healthcheck.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"], "slim has no curl: probe with python's urllib"
    url = re.search(r"http://[^'\"]+", argv[2])
    assert url is not None
    parts = urlsplit(url.group(0))
    assert str(parts.port) == args_of("EXPOSE", final_stage())[0]

    config = load_config(REPO / "config/demo.yaml", ENV)
    with serve(create_app(config, environ=ENV, watch=False)) as base:
        probe = argv[2].replace(f"http://{parts.netloc}", base)
        assert subprocess.run([sys.executable, "-c", probe], check=False, timeout=30).returncode == 0
    dead = argv[2].replace(f"http://{parts.netloc}", f"http://127.0.0.1:{free_port()}")
    assert subprocess.run([sys.executable, "-c", dead], check=False, capture_output=True, timeout=30).returncode != 0


# --- docker-compose.yml -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def services(compose: dict[str, Any], *, profile: str | None = None) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if profile in (s.get("profiles") or [None])}


def gateways(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose["services"].items():
        if "build" in service:
            yield name, service


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path, for ``./host:/container[:ro]`` volumes."""
    mounts = {}
    for volume in service.get("volumes") or []:
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = (REPO / source).resolve()
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    for target, source in bind_mounts(service).items():
        if PurePosixPath(container_path).is_relative_to(target):
            return source / PurePosixPath(container_path).relative_to(target)
    return None


def container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(mapping).split(":")[-1]) for mapping in service.get("ports") or []}


def test_default_stack_is_gateway_prometheus_grafana(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"gateway", "prometheus", "grafana"}
    assert {"vllm", "gateway-vllm"} <= set(services(compose, profile="vllm"))
    assert {"ollama", "gateway-ollama"} <= set(services(compose, profile="ollama"))
    for name, service in compose["services"].items():
        depends = service.get("depends_on") or []
        for dependency in depends:
            assert dependency in compose["services"], f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            assert source.startswith(".") or source in (compose.get("volumes") or {}), f"{name}: volume {source}"


def test_default_gateway_runs_the_demo_with_its_simulated_upstreams(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = compose["services"]["gateway"]
    args = parse_cli(gateway["command"], monkeypatch)
    assert args.command == "demo"
    assert args.host == "0.0.0.0"
    assert container_ports(gateway) == {args.port}
    in_repo = image_path_to_repo(str(args.config))
    assert in_repo == REPO / "config/demo.yaml" and in_repo.is_file()
    load_config(in_repo, ENV)


def test_every_gateway_service_builds_the_dockerfile_and_parses(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    found = dict(gateways(compose))
    assert set(found) == {"gateway", "gateway-vllm", "gateway-ollama", "gateway-fleet"}
    workdir = args_of("WORKDIR", final_stage())[-1]
    for name, service in found.items():
        assert (REPO / service["build"] / "Dockerfile").is_file()
        assert container_ports(service) == {8080}, name
        assert ledger_volume(service, workdir) in compose["volumes"], "the ledger's directory is a volume"
        args = parse_cli(service["command"], monkeypatch)
        assert (args.host, args.port) == ("0.0.0.0", 8080)
        if args.command == "serve":
            assert image_path_to_repo(str(args.config)) == REPO / "config/router.yaml"


def ledger_volume(service: dict[str, Any], workdir: str) -> str:
    (volume,) = [v.split(":")[0] for v in service.get("volumes") or [] if v.split(":")[1] == workdir]
    return volume


def test_each_gateway_keeps_its_ledger_in_its_own_volume(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gateways writing one SQLite ledger would share (and double-count against) one budget."""
    workdir = args_of("WORKDIR", final_stage())[-1]
    volumes = {name: ledger_volume(service, workdir) for name, service in gateways(compose)}
    assert len(set(volumes.values())) == len(volumes), volumes
    demo = parse_cli(compose["services"]["gateway"]["command"], monkeypatch)
    assert str(demo.state_dir) == workdir  # the demo's ledger lands in its volume too


def test_gateways_read_the_config_from_the_mounted_repo_directory(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Mounted, not only baked in: an edit on the host reaches the running gateway's hot reload."""
    for name, service in gateways(compose):
        args = parse_cli(service["command"], monkeypatch)
        mounted = host_path(service, str(args.config))
        assert mounted is not None and mounted == image_path_to_repo(str(args.config)), name
        assert mounted.parent == REPO / "config" and mounted.is_file(), name
        assert f"./config:{PurePosixPath(str(args.config)).parent}:ro" in service["volumes"], name


def compose_environment(service: dict[str, Any], host: dict[str, str]) -> dict[str, str]:
    """A service's environment as Compose interpolates it from the host's (``${VAR:-default}`` and ``${VAR}``)."""
    def substitute(match: re.Match[str]) -> str:
        return host.get(match.group(1)) or (match.group(2) or "")
    return {k: re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", substitute, str(v)) for k, v in service["environment"].items()}


def test_the_keyless_demo_needs_no_variable_from_the_host() -> None:
    """Compose interpolates every service before applying profiles: a `${VAR:?}` anywhere would stop the demo."""
    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)

    values = list(strings(yaml.safe_load((REPO / "docker-compose.yml").read_text())))
    assert any("${OPENAI_API_KEY" in value for value in values)
    assert not [value for value in values if re.search(r"\$\{\w+:?\?", value)]


@pytest.mark.parametrize("gateway", ["gateway-vllm", "gateway-ollama"])
def test_profile_gateways_refuse_to_start_with_an_empty_flagship_key(compose: dict[str, Any], gateway: str) -> None:
    service = compose["services"][gateway]
    for host in ({}, {"OPENAI_API_KEY": ""}):
        environment = compose_environment(service, host)
        assert environment["OPENAI_API_KEY"] == ""
        with pytest.raises(ConfigError, match="OPENAI_API_KEY is set but empty"):
            load_config(REPO / "config/router.yaml", environment)
    load_config(REPO / "config/router.yaml", compose_environment(service, {"OPENAI_API_KEY": "sk-live"}))


@pytest.mark.parametrize(("profile", "upstream", "gateway"), [("vllm", "vllm", "gateway-vllm"), ("ollama", "ollama", "gateway-ollama")])
def test_profile_gateway_points_the_mid_tier_at_its_model_server(
    compose: dict[str, Any], profile: str, upstream: str, gateway: str
) -> None:
    service = compose["services"][gateway]
    mid = urlsplit(service["environment"]["MID_BASE_URL"])
    assert mid.hostname == upstream and mid.path == "/v1"
    server = compose["services"][upstream]
    if profile == "vllm":
        assert f"--port={mid.port}" in server["command"]
        devices = server["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    else:
        assert mid.port == 11434  # Ollama's fixed port
    # The shipped config reads exactly these variables.
    router_yaml = (REPO / "config/router.yaml").read_text()
    for variable in service["environment"]:
        if variable.startswith("MID_") or variable == "OPENAI_API_KEY":
            assert "${" + variable in router_yaml, variable


def test_prometheus_loads_the_repo_config_and_its_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    flags = dict(flag.lstrip("-").split("=", 1) for flag in prometheus["command"])
    config_in_container = flags["config.file"]
    config_file = host_path(prometheus, config_in_container)
    assert config_file == REPO / "config/prometheus.yml"
    config = yaml.safe_load(config_file.read_text())
    rules = [host_path(prometheus, str(PurePosixPath(config_in_container).parent / rule)) for rule in config["rule_files"]]
    assert rules == [ALERTS] and ALERTS.is_file()
    # Locally too: rule files are relative to the config file.
    assert [(config_file.parent / rule).resolve() for rule in config["rule_files"]] == [ALERTS]


def test_prometheus_scrapes_every_gateway_on_its_port(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "config/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    discovered: set[tuple[str, int]] = set()
    for sd in job.get("dns_sd_configs", []):
        discovered |= {(name, sd["port"]) for name in sd["names"]}
    for static in job.get("static_configs", []):
        for target in static["targets"]:
            host, port = target.rsplit(":", 1)
            discovered.add((host, int(port)))
    expected = {(name, port) for name, service in gateways(compose) for port in container_ports(service)}
    assert discovered == expected
    assert ("gateway", 8080) in discovered


def test_grafana_provisions_the_datasource_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert container_ports(grafana) == {3000}
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == REPO / "config/grafana/provisioning"

    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port in container_ports(compose["services"]["prometheus"])
    assert datasource["type"] == "prometheus"
    # $__rate_interval is derived from it: it must be the scrape interval Prometheus really uses.
    scrape = yaml.safe_load((REPO / "config/prometheus.yml").read_text())["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape

    (provider,) = yaml.safe_load((provisioning / "dashboards/llm-router.yml").read_text())["providers"]
    folder = host_path(grafana, provider["options"]["path"])
    assert folder == DASHBOARD.parent and DASHBOARD.is_file()
    assert host_path(grafana, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]) == DASHBOARD

    uids = {datasource["uid"]}
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]


# --- dashboard and alerts only use metrics that exist ------------------------------------------------


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def exported_names() -> set[str]:
    metrics = Metrics(backends=["mid"], tiers=["mid"], tenants=[], tasks=[], rules=[], version="v", registry=CollectorRegistry())
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def test_dashboard_and_alerts_use_only_defined_metrics() -> None:
    defined = exported_names()
    used: set[str] = set()
    for expr in dashboard_exprs() + alert_exprs():
        used |= set(re.findall(r"\bllm_router_\w+", expr))
    assert used, "no llm_router_ metric found in the dashboard"
    assert used <= defined, f"undefined metrics: {sorted(used - defined)}"


def test_dashboard_covers_what_operators_asked_for() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard_panels())
    for topic in ("mid vs flagship", "cost per hour", "by tenant", "all-flagship", "latency", "first token",
                  "error", "fallback", "breaker", "budget"):
        assert topic in titles, topic
    exprs = " ".join(dashboard_exprs())
    for metric in ("llm_router_requests_total", "llm_router_cost_usd_total", "llm_router_cost_saved_usd_total",
                   "llm_router_request_duration_seconds_bucket", "llm_router_time_to_first_token_seconds_bucket",
                   "llm_router_fallbacks_total", "llm_router_circuit_breaker_state", "llm_router_budget_remaining_usd",
                   "llm_router_gateway_overhead_seconds_bucket", "llm_router_config_info"):
        assert metric in exprs, metric


def test_alerts_cover_what_operators_asked_for() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    names = {rule["alert"] for group in groups for rule in group["rules"]}
    assert {"LLMRouterFlagshipShareHigh", "LLMRouterHighFallbackRate", "LLMRouterHighErrorRate",
            "LLMRouterCircuitBreakerOpen", "LLMRouterBudgetNearlySpent", "LLMRouterConfigReloadFailing"} <= names
    for group in groups:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"]


def test_scripts_are_executable_shell() -> None:
    script = REPO / "scripts/install-prometheus.sh"
    assert script.stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(script)], check=False, timeout=30).returncode == 0
    assert "apt-get install" in script.read_text()


def test_commands_use_the_exec_form(compose: dict[str, Any]) -> None:
    """A shell-form string would be split by a shell (quoting surprises) and keep PID 1 from getting signals."""
    for name, service in compose["services"].items():
        command = service.get("command")
        if command is not None:
            assert isinstance(command, list), f"{name}: use the exec (list) form"
    exec_form(args_of("CMD", final_stage())[-1])


def test_license_is_the_full_apache_text_named_by_an_spdx_expression() -> None:
    """PEP 639: setuptools >= 77 takes ``license = "Apache-2.0"`` and ships LICENSE in the wheel."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    (setuptools,) = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools == "setuptools>=77"
    text = (REPO / "LICENSE").read_text()
    # The canonical https://www.apache.org/licenses/LICENSE-2.0.txt, byte for byte.
    assert hashlib.sha256(text.encode()).hexdigest() == "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
    copied = {source for args in args_of("COPY") if not args.startswith("--from") for source in args.split()[:-1]}
    assert "LICENSE" in copied  # the image's wheel carries it


def bare_path(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only ``tools`` (no apt-get, no prometheus), as on a machine without Debian's packages."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_install_script_without_apt_get_says_what_to_install(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts/install-prometheus.sh")],
        env={"PATH": bare_path(tmp_path, "bash", "id", "cat")}, capture_output=True, text=True, check=False, timeout=30,
    )
    assert done.returncode == 3, done.stderr  # .ci/run's "cannot install here"
    assert "command not found" not in done.stderr
    assert "apt-get not found" in done.stderr
    assert "brew install prometheus" in done.stderr and "https://prometheus.io/download/" in done.stderr


def test_ci_run_skips_only_the_prometheus_tests_when_it_could_not_install_it(tmp_path: Path) -> None:
    ci_run = (REPO / ".ci/run").read_text()
    assert "export LLM_ROUTER_SKIP_SERVERS=prometheus" in ci_run and '"$status" -eq 3' in ci_run
    env = {"PATH": bare_path(tmp_path, "bash"), "HOME": str(tmp_path), "CI": "1", "COLUMNS": "300"}
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/e2e/test_prometheus.py",
               "-k", "promtool_accepts"]
    skipped = subprocess.run(command, env={**env, "LLM_ROUTER_SKIP_SERVERS": "prometheus"}, cwd=REPO,
                             capture_output=True, text=True, check=False, timeout=300)
    assert skipped.returncode == 0, skipped.stdout
    assert "SKIPPED ON PURPOSE, no way to install it here: `promtool` is not installed" in skipped.stdout
    assert "1 skipped" in skipped.stdout
    # Without that word from .ci/run, CI still fails on a missing Prometheus instead of skipping it.
    failed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert failed.returncode == 1 and "`promtool` is not installed" in failed.stdout
