"""deploy/: the Dockerfile, the compose file and the Kubernetes manifests say what an operator
relies on, and every setting they pass is one the service reads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from worker.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SETTINGS = {f"PROVISIONER_{name.upper()}" for name in Settings.model_fields}


def manifests() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[(doc["kind"], doc.get("metadata", {}).get("name", path.stem))] = doc
    return found


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def container(doc: dict) -> dict:
    spec = doc["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (only,) = spec["containers"]
    return only


def test_dockerfile_is_multi_stage_non_root_and_without_build_tools_in_the_final_image():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) >= 2
    final = stages[-1]
    assert final.startswith("python:3.11-slim")
    assert re.search(r"^USER (?!root|0\b)\S+", final, flags=re.M)
    assert not re.search(r"build-essential|gcc|apt-get install", final)
    assert "--no-index" in final  # only the builder's wheels, nothing fetched at this stage
    assert re.search(r'^ENTRYPOINT \["provisioner"\]', final, flags=re.M)


def test_compose_has_every_component_and_a_broker_that_does_not_evict():
    services = compose()["services"]
    assert {"api", "worker", "beat", "redis", "postgres", "sandbox", "migrate"} <= set(services)
    redis = " ".join(services["redis"]["command"])
    assert "--maxmemory-policy noeviction" in redis and "--appendonly yes" in redis
    for name, command in (("api", "api"), ("worker", "worker"), ("beat", "beat"),
                          ("migrate", "migrate"), ("sandbox", "sandbox")):
        assert services[name]["command"][0] == command
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    for name in ("api", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}
    assert services["worker"]["environment"]["PROVISIONER_WORKER_METRICS_PORT"] == "9100"
    for service in services.values():
        unknown = {k for k in service.get("environment", {}) if k.startswith("PROVISIONER_")}
        assert unknown <= SETTINGS, unknown - SETTINGS


@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose client is not installed here; the YAML checks above still run")
def test_compose_file_passes_docker_compose_config():
    done = subprocess.run(["docker", "compose", "-f", str(DEPLOY / "docker-compose.yml"),
                           "config", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_kubernetes_manifests():
    docs = manifests()
    api = docs[("Deployment", "provisioner-api")]
    worker = docs[("Deployment", "provisioner-worker")]
    beat = docs[("Deployment", "provisioner-beat")]
    job = docs[("Job", "provisioner-migrate")]
    service = docs[("Service", "provisioner-api")]
    scaled = docs[("ScaledObject", "provisioner-worker")]

    assert container(api)["args"][0] == "api"
    assert container(api)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert service["spec"]["selector"] == api["spec"]["template"]["metadata"]["labels"]
    assert container(worker)["args"][0] == "worker"
    assert {"name": "PROVISIONER_WORKER_METRICS_PORT", "value": "9100"} in container(worker)["env"]
    assert container(beat)["args"] == ["beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert container(job)["args"] == ["migrate"]

    # KEDA scales the worker Deployment on the lengths of both Celery queues' Redis lists.
    assert scaled["spec"]["scaleTargetRef"]["name"] == "provisioner-worker"
    lists = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"] if t["type"] == "redis"}
    assert lists == {"interactive", "bulk"}

    # Every workload takes its settings from the ConfigMap and the Secret, which name only
    # settings the service reads.
    config = docs[("ConfigMap", "provisioner-config")]["data"]
    secret = docs[("Secret", "provisioner-secrets")]["stringData"]
    assert set(config) | set(secret) <= SETTINGS, (set(config) | set(secret)) - SETTINGS
    assert {"PROVISIONER_DATABASE_URL", "PROVISIONER_REDIS_URL"} <= set(secret)
    for workload in (api, worker, beat, job):
        sources = container(workload)["envFrom"]
        assert {"configMapRef": {"name": "provisioner-config"}} in sources
        assert {"secretRef": {"name": "provisioner-secrets"}} in sources
        for env in container(workload).get("env", []):
            assert env["name"] in SETTINGS

    # kustomize lists every manifest.
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
