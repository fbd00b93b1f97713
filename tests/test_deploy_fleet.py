"""The fleet deployment files: the compose profile ``fleet`` and the Kubernetes manifests in deploy/k8s,
parsed and cross-checked against each other, the Dockerfile, the shipped config and the CLI."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from router.api import router as api_router
from router.config import load_config
from tests.test_deploy_files import (
    REPO, args_of, bind_mounts, container_ports, final_stage, ignored, image_path_to_repo, parse_cli,
)

K8S = REPO / "deploy" / "k8s"
ROUTER_YAML = (REPO / "config" / "router.yaml").read_text()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> manifest, for every file the kustomization lists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            out[doc["kind"]] = doc
    return out


# --- compose profile fleet --------------------------------------------------------------------------


def test_fleet_profile_runs_three_replicas_with_redis_postgres_and_a_load_balancer(compose: dict[str, Any]) -> None:
    services = {name: s for name, s in compose["services"].items() if "fleet" in (s.get("profiles") or [])}
    assert set(services) == {"gateway-fleet", "lb", "redis", "postgres"}
    gateway = services["gateway-fleet"]
    assert gateway["deploy"]["replicas"] == 3
    assert set(gateway["depends_on"]) == {"redis", "postgres"}
    for dependency in ("redis", "postgres"):  # the replicas start once both answer their health checks
        assert gateway["depends_on"][dependency] == {"condition": "service_healthy"}
        assert services[dependency]["healthcheck"]["test"][0] == "CMD"


def test_fleet_redis_persists_to_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"  # a restart keeps budget windows and rate limits
    (volume,) = redis["volumes"]
    name, target = volume.split(":")
    assert target == "/data" and name in compose["volumes"]


def test_fleet_replicas_point_at_the_compose_redis_and_postgres(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = compose["services"]["gateway-fleet"]
    args = parse_cli(gateway["command"], monkeypatch)
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8080)
    env = gateway["environment"]
    redis = urlsplit(env["REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    ledger = urlsplit(env["ROUTER_LEDGER_URL"].replace("${POSTGRES_PASSWORD:-router}", "router"))
    postgres_env = compose["services"]["postgres"]["environment"]
    assert (ledger.scheme, ledger.hostname, ledger.port) == ("postgresql", "postgres", 5432)
    assert ledger.username == postgres_env["POSTGRES_USER"] and ledger.path == "/" + postgres_env["POSTGRES_DB"]
    assert ledger.password == postgres_env["POSTGRES_PASSWORD"].replace("${POSTGRES_PASSWORD:-router}", "router")
    for variable in ("REDIS_URL", "ROUTER_LEDGER_URL", "MID_BASE_URL", "OPENAI_API_KEY"):  # what the shipped config reads
        assert "${" + variable in ROUTER_YAML, variable


def test_the_load_balancer_sends_to_every_replica_on_its_port(compose: dict[str, Any]) -> None:
    lb = compose["services"]["lb"]
    (conf,) = [source for target, source in bind_mounts(lb).items() if target.startswith("/etc/nginx/")]
    text = conf.read_text()
    (server,) = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", text, re.M)
    assert server[0] == "gateway-fleet" and int(server[1]) in container_ports(compose["services"]["gateway-fleet"])
    (listen,) = re.findall(r"^\s*listen\s+(\d+);", text, re.M)
    assert int(listen) in container_ports(lb)
    assert "proxy_buffering off;" in text  # SSE must stream through
    assert "gateway-fleet" in lb["depends_on"]


def test_prometheus_discovers_each_fleet_replica(compose: dict[str, Any]) -> None:
    (job,) = yaml.safe_load((REPO / "config/prometheus.yml").read_text())["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert "gateway-fleet" in sd["names"] and sd["type"] == "A"  # one A record per replica
    assert sd["port"] in container_ports(compose["services"]["gateway-fleet"])


def test_the_image_carries_the_fleet_clients(compose: dict[str, Any]) -> None:
    """The fleet's replicas (compose and Kubernetes) run the one image: it must hold redis and psycopg."""
    installs = [args for args in args_of("RUN") if "pip install" in args]
    assert any("'.[fleet]'" in args for args in installs), installs
    assert compose["services"]["gateway-fleet"]["build"] == "."


# --- Kubernetes ------------------------------------------------------------------------------------


def test_manifests_are_a_deployment_service_and_pdb_with_one_selector() -> None:
    found = manifests()
    assert set(found) == {"Deployment", "Service", "PodDisruptionBudget"}
    deployment = found["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert found["Service"]["spec"]["selector"].items() <= labels.items()
    pdb = found["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["minAvailable"] < deployment["spec"]["replicas"]


def test_deployment_serves_the_configmap_config_and_probes_real_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    found = manifests()
    pod = found["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = parse_cli(container["args"], monkeypatch)
    assert (args.command, args.host) == ("serve", "0.0.0.0")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": args.port}
    assert found["Service"]["spec"]["ports"][0]["targetPort"] in ports
    paths = {route.path for route in api_router.routes}  # type: ignore[attr-defined]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] in paths and "/readyz" in paths

    # The config directory is the ConfigMap mounted whole (a subPath mount never sees updates).
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_dir = PurePosixPath(str(args.config)).parent
    mount = mounts[str(config_dir)]
    assert "subPath" not in mount
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap = volumes[mount["name"]]["configMap"]["name"]
    # The kustomization's instructions create that ConfigMap from the config and the files it names.
    instructions = (K8S / "kustomization.yaml").read_text()
    created = re.search(rf"create configmap {configmap} ((?:--from-file=\S+\s*(?:\\\s*)?)+)", instructions)
    assert created, f"no `kubectl create configmap {configmap}` in the kustomization"
    files = {PurePosixPath(f).name: REPO / f for f in re.findall(r"--from-file=(\S+)", created.group(1))}
    assert set(files) >= {PurePosixPath(str(args.config)).name, _vocabulary_file()}
    assert all(path.is_file() for path in files.values())


def test_a_pod_loads_the_shipped_config_from_its_configmap_and_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file the config names (vocabulary, classifier model) is where the pod looks: in the
    ConfigMap the instructions create, or in the image (a COPY line, not dockerignored)."""
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_path = PurePosixPath(str(parse_cli(container["args"], monkeypatch).config))
    configmap_dir = tmp_path / config_path.parent.relative_to("/")
    configmap_dir.mkdir(parents=True)
    instructions = (K8S / "kustomization.yaml").read_text()
    created = re.search(r"create configmap \S+ ((?:--from-file=\S+\s*(?:\\\s*)?)+)", instructions)
    assert created
    for source in re.findall(r"--from-file=(\S+)", created.group(1)):
        (configmap_dir / PurePosixPath(source).name).write_bytes((REPO / source).read_bytes())
    environ = {"OPENAI_API_KEY": "sk-test", "ROUTER_API_KEYS": "sk-client:acme"}
    for var in container.get("env", []):
        value = var["value"]
        if value.startswith("/"):  # a path in the image: stage it from the repo as the Dockerfile copies it
            source = image_path_to_repo(value)
            assert source is not None and source.is_file(), f"{var['name']}={value} is not in the image"
            assert not ignored(str(source.relative_to(REPO))), f"{source} is dockerignored"
            staged = tmp_path / value.lstrip("/")
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(source.read_bytes())
            value = str(staged)
        environ[var["name"]] = value
    config = load_config(configmap_dir / config_path.name, environ)
    assert config.classifier.model is not None


def test_pod_runs_as_the_image_user_with_writable_dirs_mounted(monkeypatch: pytest.MonkeyPatch) -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    user = args_of("USER", final_stage())[-1]
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert args_of("WORKDIR", final_stage())[-1] in mounted and "/tmp" in mounted
    # Every secret the shipped config requires comes from the Secret the instructions create.
    secret = container["envFrom"][0]["secretRef"]["name"]
    instructions = (K8S / "kustomization.yaml").read_text()
    keys = set(re.findall(r"--from-literal=(\w+)=", instructions.split(f"create secret generic {secret}", 1)[1]))
    required = set(re.findall(r"\$\{(\w+)\}", re.sub(r"#.*", "", ROUTER_YAML)))  # ${VAR} without a default
    assert required <= keys and {"REDIS_URL", "ROUTER_LEDGER_URL"} <= keys


def _vocabulary_file() -> str:
    vocabulary = yaml.safe_load(ROUTER_YAML)["classifier"]["vocabulary"]
    assert isinstance(vocabulary, str) and "/" not in vocabulary  # next to router.yaml in the ConfigMap
    return str(Path(vocabulary).name)
