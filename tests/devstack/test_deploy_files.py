"""deploy/: the Dockerfile, the compose file and the Kubernetes manifests say what an operator
relies on, every setting they pass is one the service reads, and they are checked offline:
`kubectl kustomize deploy/k8s` rendered and every object validated against the Kubernetes
schemas (kubernetes-validate bundles them), the compose file against the compose specification
(check-jsonschema bundles it). No Docker engine here: the Dockerfile is checked statically."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from worker.runtime.celery_app import QUEUES
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SETTINGS = {f"PROVISIONER_{name.upper()}" for name in Settings.model_fields}
# The oldest Kubernetes these manifests promise to fit, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# KEDA's custom resources: no schema in kubernetes-validate; checked by hand below.
KEDA = {"ScaledObject", "TriggerAuthentication"}
# What the deployer writes from the .example files beside them (git-ignored).
DEPLOYER_FILES = ("secrets.env", "keda-redis.env")


def kubectl() -> str:
    """kubectl with kustomize v5 (the manifests use `labels` and `replacements`), or a clear
    failure: this check must not pass by not running."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is needed to render deploy/k8s (`kubectl kustomize`): install "
                    "kubectl 1.27 or newer (it embeds kustomize v5)")
    done = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True,
                          text=True, timeout=60)
    version = json.loads(done.stdout or "{}").get("kustomizeVersion", "")
    if not re.match(r"v([5-9]|\d{2,})\.", version):
        pytest.fail(f"kubectl's kustomize is {version or 'unknown'}; deploy/k8s needs v5 "
                    "(kubectl 1.27 or newer)")
    return path


def deployable_copy(tmp_path: Path, **files: str) -> Path:
    """deploy/k8s as a deployer has it: the committed files, plus the secrets files written
    from their examples (or as given), never a developer's own."""
    target = tmp_path / "k8s"
    shutil.copytree(K8S, target, ignore=shutil.ignore_patterns(*DEPLOYER_FILES))
    for name in DEPLOYER_FILES:
        (target / name).write_text(files.get(name, (K8S / f"{name}.example").read_text()))
    return target


def render(directory: Path) -> list[dict]:
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    return render(deployable_copy(tmp_path_factory.mktemp("render")))


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    (only,) = [d for d in docs if d["kind"] == kind
               and (name is None or d["metadata"]["name"] == name)]
    return only


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def containers(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def main_container(doc: dict) -> dict:
    (only,) = pod_spec(doc)["containers"]
    return only


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job")]


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return dict(pairs)


# --- Kubernetes -------------------------------------------------------------------------------

def test_every_rendered_object_passes_the_kubernetes_schemas(rendered):
    kinds = {d["kind"] for d in rendered}
    assert {"Deployment", "Job", "Service", "ConfigMap", "Secret",
            "PodDisruptionBudget"} <= kinds
    for doc in rendered:
        if doc["kind"] in KEDA:
            continue
        for version in KUBERNETES_VERSIONS:
            # strict: an unknown field (a typo) is an error, as `kubectl apply` would make it.
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_misspelt_field(rendered):
    broken = copy.deepcopy(find(rendered, "Deployment", "provisioner-worker"))
    main_container(broken)["livenessProbe"]["periodSecond"] = 20
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_no_secret_is_committed_and_none_renders_without_the_deployers_files(tmp_path):
    committed = [doc for path in K8S.glob("*.yaml") for doc in yaml.safe_load_all(path.read_text())
                 if doc and doc.get("kind") == "Secret"]
    assert committed == []
    bare = tmp_path / "bare"
    shutil.copytree(K8S, bare, ignore=shutil.ignore_patterns(*DEPLOYER_FILES))
    done = subprocess.run([kubectl(), "kustomize", str(bare)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "secrets.env" in done.stderr
    assert set(DEPLOYER_FILES) <= set((K8S / ".gitignore").read_text().split())


def test_the_secrets_come_from_the_deployers_file_and_every_reference_resolves(tmp_path):
    docs = render(deployable_copy(tmp_path, **{"secrets.env": "PROVISIONER_SECRET_KEYS=k1\n"
                                               "PROVISIONER_DATABASE_URL=postgresql://x/y\n"}))
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    (app_secret,) = [s for name, s in secrets.items() if name.startswith("provisioner-secrets-")]
    assert set(app_secret["data"]) == {"PROVISIONER_SECRET_KEYS", "PROVISIONER_DATABASE_URL"}
    config = find(docs, "ConfigMap", "provisioner-config")["metadata"]["name"]
    for workload in workloads(docs):
        for container in containers(workload):
            refs = container["envFrom"]
            assert {"configMapRef": {"name": config}} in refs, container["name"]
            assert {"secretRef": {"name": app_secret["metadata"]["name"]}} in refs
    # KEDA's password: from its own generated Secret, found under its hashed name.
    auth = find(docs, "TriggerAuthentication")
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["name"] in secrets and ref["key"] in secrets[ref["name"]]["data"]


def test_the_settings_passed_are_ones_the_service_reads_and_production_is_on(rendered):
    config = find(rendered, "ConfigMap", "provisioner-config")["data"]
    secret = env_file(K8S / "secrets.env.example")
    assert config["PROVISIONER_ENV"] == "production"
    assert set(config) | set(secret) <= SETTINGS, (set(config) | set(secret)) - SETTINGS
    assert {"PROVISIONER_DATABASE_URL", "PROVISIONER_REDIS_URL",
            "PROVISIONER_SECRET_KEYS"} <= set(secret)
    for workload in workloads(rendered):
        for container in containers(workload):
            for env in container.get("env", []):
                assert env["name"] in SETTINGS


def test_pods_meet_the_restricted_pod_security_standard(rendered):
    var_dir = find(rendered, "ConfigMap", "provisioner-config")["data"]["PROVISIONER_VAR_DIR"]
    for workload in workloads(rendered):
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}
        mounts_of = {}
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert not context.get("privileged"), (name, container["name"])
            assert container["resources"]["requests"] and container["resources"]["limits"]
            mounts_of[container["name"]] = {m["mountPath"] for m in container["volumeMounts"]}
        # A read-only root: what each process writes is an emptyDir.
        assert all("/tmp" in mounts for mounts in mounts_of.values()), name
        if workload["kind"] == "Deployment":
            assert var_dir in mounts_of[main_container(workload)["name"]], name


def test_the_components_run_what_they_should(rendered):
    api = find(rendered, "Deployment", "provisioner-api")
    service = find(rendered, "Service", "provisioner-api")
    worker = find(rendered, "Deployment", "provisioner-worker")
    beat = find(rendered, "Deployment", "provisioner-beat")
    assert main_container(api)["args"][0] == "api"
    assert main_container(api)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main_container(api)["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert service["spec"]["selector"] == api["spec"]["template"]["metadata"]["labels"]
    assert main_container(worker)["args"][0] == "worker"
    assert {"name": "PROVISIONER_WORKER_METRICS_PORT", "value": "9100"} in main_container(
        worker)["env"]
    assert main_container(beat)["args"] == ["beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"


def test_worker_and_beat_liveness_runs_the_heartbeat_and_tick_checks(rendered):
    # The commands tests/integration/liveness/test_probes.py runs against real processes.
    worker = main_container(find(rendered, "Deployment", "provisioner-worker"))
    beat = main_container(find(rendered, "Deployment", "provisioner-beat"))
    for container, kind in ((worker, "worker"), (beat, "beat")):
        for probe in ("startupProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:3] == ["provisioner", kind, "--check-alive"], (kind, probe)
            assert container[probe]["timeoutSeconds"] >= 10  # a Python start on a busy node


def test_deployments_wait_for_this_versions_schema_and_the_job_migrates(rendered):
    job = find(rendered, "Job")
    assert main_container(job)["args"] == ["migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    image = main_container(job)["image"]
    for workload in rendered:
        if workload["kind"] != "Deployment":
            continue
        (init,) = pod_spec(workload)["initContainers"]
        assert init["args"][:2] == ["migrate", "--check"] and "--wait" in init["args"]
        assert init["image"] == main_container(workload)["image"] == image


def test_each_version_gets_its_own_migration_job(tmp_path, rendered):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    version = next(label["pairs"]["app.kubernetes.io/version"]
                   for label in kustomization["labels"]
                   if "app.kubernetes.io/version" in label["pairs"])
    assert version == image["newTag"]  # one release, said twice: they must agree
    assert find(rendered, "Job")["metadata"]["name"] == f"provisioner-migrate-{version}"

    release = deployable_copy(tmp_path)
    text = (release / "kustomization.yaml").read_text().replace(f'"{version}"', '"0.2.0"')
    (release / "kustomization.yaml").write_text(text)
    docs = render(release)
    job = find(docs, "Job")
    assert job["metadata"]["name"] == "provisioner-migrate-0.2.0"
    assert main_container(job)["image"].endswith(":0.2.0")


def test_every_deployment_has_a_disruption_budget(rendered):
    budgets = [d for d in rendered if d["kind"] == "PodDisruptionBudget"]
    for deployment in (d for d in rendered if d["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets
                    if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, deployment["metadata"]["name"]
        # Never `minAvailable` equal to the replicas: a drain must be able to proceed.
        assert matching[0]["spec"].get("maxUnavailable", 0) >= 1


def test_keda_scales_the_workers_on_every_celery_queue(rendered):
    scaled = find(rendered, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "provisioner-worker"
    lists = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"] if t["type"] == "redis"}
    assert lists == set(QUEUES)
    # ...which are the queues the worker Deployment serves.
    worker = main_container(find(rendered, "Deployment", "provisioner-worker"))
    queues = worker["args"][worker["args"].index("--queues") + 1].split(",")
    assert set(queues) == set(QUEUES)
    auth = find(rendered, "TriggerAuthentication")["metadata"]["name"]
    assert {t["authenticationRef"]["name"] for t in scaled["spec"]["triggers"]} == {auth}


def test_every_manifest_is_listed_in_the_kustomization():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "kustomizeconfig.yaml"}
    files -= {p.name for p in K8S.glob("*.example.yaml")}
    assert set(kustomization["resources"]) == files


# --- compose ----------------------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run([str(tool), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_compose_file_passes_the_compose_specification(tmp_path):
    done = check_compose(DEPLOY / "docker-compose.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    # ...and the check is one that can fail: a misspelt key of a service.
    broken = compose()
    broken["services"]["api"]["depends_onn"] = broken["services"]["api"].pop("depends_on")
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(broken))
    assert check_compose(tmp_path / "compose.yml").returncode != 0


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
    assert services["worker"]["healthcheck"]["test"][1:4] == ["provisioner", "worker",
                                                              "--check-alive"]
    assert services["beat"]["healthcheck"]["test"][1:4] == ["provisioner", "beat",
                                                            "--check-alive"]
    for service in services.values():
        unknown = {k for k in service.get("environment", {}) if k.startswith("PROVISIONER_")}
        assert unknown <= SETTINGS, unknown - SETTINGS


def test_compose_gives_every_container_the_same_secret_keys_or_refuses():
    services = compose()["services"]
    keys = {services[name]["environment"]["PROVISIONER_SECRET_KEYS"]
            for name in ("api", "worker", "beat", "migrate")}
    # One value, from deploy/.env or the shell; `:?` makes compose stop when it is unset.
    (only,) = keys
    assert re.fullmatch(r"\$\{PROVISIONER_SECRET_KEYS:\?[^}]+\}", only)
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().split()


# --- Dockerfile (no Docker engine here: checked statically) ----------------------------------

def dockerfile_stages() -> list[str]:
    return re.split(r"^FROM ", (DEPLOY / "Dockerfile").read_text(), flags=re.M)[1:]


def test_dockerfile_is_multi_stage_non_root_and_without_build_tools_in_the_final_image():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert final.startswith("python:3.11-slim")
    assert re.search(r"^USER (?!root|0\b)\S+", final, flags=re.M)
    assert not re.search(r"build-essential|gcc|apt-get install", final)
    assert "--no-index" in final  # only the builder's wheels, nothing fetched at this stage
    assert re.search(r'^ENTRYPOINT \["provisioner"\]', final, flags=re.M)


def test_the_image_runs_in_production_mode_as_the_pods_expect(rendered):
    final = dockerfile_stages()[-1]
    assert re.search(r"PROVISIONER_ENV=production", final)
    user = re.search(r"^USER (\d+):(\d+)", final, flags=re.M)
    assert user, "a numeric USER, so that runAsNonRoot can verify it"
    var_dir = re.search(r"PROVISIONER_VAR_DIR=(\S+)", final).group(1)
    config = find(rendered, "ConfigMap", "provisioner-config")["data"]
    assert config["PROVISIONER_VAR_DIR"] == var_dir
    for workload in workloads(rendered):
        assert pod_spec(workload)["securityContext"]["runAsUser"] == int(user.group(1))


def test_the_builder_copies_every_package_and_package_file_the_wheel_needs():
    builder = dockerfile_stages()[0]
    copied = {src for line in re.findall(r"^COPY (.+)$", builder, flags=re.M)
              for src in line.split()[:-1] if not src.startswith("--")}
    for src in copied:
        assert (ROOT / src).exists(), src
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    packages = {p.rstrip("*") for p in setuptools["packages"]["find"]["include"]}
    assert packages <= {c.strip("./") for c in copied}
    assert {"pyproject.toml", project["project"]["readme"]} <= copied
    # The .dockerignore lets through what is copied.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {f"!{c.strip('./')}" for c in copied} <= set(ignore)
    # Package data (migrations, the console's templates) lives inside the packages copied.
    assert set(setuptools["package-data"]) <= packages
