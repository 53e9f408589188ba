"""The Kubernetes manifests: Kustomize renders both overlays, every object validates against the
Kubernetes schemas (custom resources against k8s/schemas/), checkov finds nothing that is not
explained inline, and the properties the deployment relies on hold (probes, non-root, read-only root
file systems, Secrets never literals, the network policy's ports, Triton's autoscaling metric).

The tools come from ``.ci/install-k8s-tools.sh`` (kubectl with kustomize v5; kubernetes-validate and
checkov in ``.venv-k8s``). Where one is missing the tests that need it skip, saying which; under
``CI`` they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
K8S_VENV = ROOT / ".venv-k8s" / "bin"
# Oldest and newest Kubernetes minor versions the manifests are validated against.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# Custom resources: not in kubernetes-validate's schemas, validated against k8s/schemas/*.json.
CUSTOM_KINDS = {"prod": {"Cluster", "ScheduledBackup", "PodMonitor", "ServiceMonitor", "PrometheusRule"}, "dev": set()}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
CONFIDENTIAL = {"HIPCAD_DATABASE_URL", "HIPCAD_VIEWER_SECRET", "HIPCAD_DICOMWEB_CREDENTIALS"}
# Every checkov check that may be skipped, and where: anything else skipped, or any failure, fails.
ALLOWED_SKIPS = {
    "CKV_K8S_35": {"Deployment.hipcad.cds-service"},  # settings only from env (reason inline)
    "CKV_K8S_43": {  # dev runs version tags; prod pins digests
        "Deployment.hipcad.cds-service",
        "Deployment.hipcad.triton",
        "Deployment.hipcad.otel-collector",
        "StatefulSet.hipcad.hipcad-db",
    },
    "CKV_K8S_40": {"StatefulSet.hipcad.hipcad-db"},  # postgres image's UID 999 (dev only)
    "CKV_DOCKER_2": {"Dockerfile.", "docker/triton.Dockerfile."},  # no HEALTHCHECK: Kubernetes probes
}
EXPECTED_EGRESS = {("UDP", 53), ("TCP", 53), ("TCP", 8001), ("TCP", 5432), ("TCP", 4318), ("TCP", 443)}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def missing(reason: str) -> None:
    """A tool is not installed: a skip on a developer machine, a failure in CI."""
    message = f"{reason} (install with: bash .ci/install-k8s-tools.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> str:
    for candidate in (K8S_VENV / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    missing(f"{name} is not installed")
    raise AssertionError  # unreachable


@cache
def _kubectl() -> str | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, check=False)
    return kubectl if re.search(r"Kustomize Version: v[5-9]", version.stdout) else None


@cache
def _render(overlay: str) -> str:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered_text(overlay: str) -> str:
    if _kubectl() is None:
        missing("kubectl with kustomize v5 is not installed")
    return _render(overlay)


def rendered(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc]


def objects(overlay: str, kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in rendered(overlay) if doc["kind"] == kind}


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


# ---------------------------------------------------------------- layout (no tools needed)


def test_every_kustomization_resource_exists_and_parses():
    for kustomization in K8S.rglob("kustomization.yaml"):
        config = yaml.safe_load(kustomization.read_text())
        for resource in config.get("resources", []):
            target = (kustomization.parent / resource).resolve()
            assert target.exists(), f"{kustomization}: {resource}"
            for path in [target] if target.is_file() else [target / "kustomization.yaml"]:
                assert documents(path)
        for generator in config.get("configMapGenerator", []) + config.get("secretGenerator", []):
            for env_file in generator.get("envs", []):
                assert (kustomization.parent / env_file).is_file(), f"{kustomization}: {env_file}"


def test_overlays_are_dev_and_prod():
    assert sorted(path.name for path in (K8S / "overlays").iterdir()) == ["dev", "prod"]


def test_triton_runs_on_gpu_nodes_and_the_service_points_at_it():
    triton = next(d for d in documents(K8S / "base" / "triton.yaml") if d["kind"] == "Deployment")
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {p["containerPort"] for p in container["ports"]} == {8000, 8001, 8002}
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    literals = base["configMapGenerator"][0]["literals"]
    assert "HIPCAD_TRITON_URL=triton:8001" in literals


def test_dockerfiles():
    service = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", service, re.M)
    assert len(stages) == 2 and stages[0][1] == "builder", stages
    assert stages[1][0].startswith("python:3.11-slim")
    builder, final = service.split("\nFROM ", 2)[1:]
    assert "pip wheel" in builder
    assert "COPY --from=builder /opt/venv /opt/venv" in final and "pip install" not in final  # tests/test_container.py
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|apt-get)\b", final)
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and re.fullmatch(r"[1-9]\d*(:\d+)?", user[-1]), "numeric non-root USER"
    assert 'ENTRYPOINT ["cds-service"]' in final and 'CMD ["serve"]' in final

    triton = (ROOT / "docker" / "triton.Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:24\.\d\d-py3@sha256:[0-9a-f]{64}$", triton, re.M)
    assert re.search(r"^COPY .*model_repository/ /models/$", triton, re.M)
    assert re.findall(r"^USER\s+(\S+)", triton, re.M)[-1] != "0"

    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".venv-*", "var", "out", "build", "**/node_modules", "tests"} <= ignored
    assert not {"model_repository", "cds_service", "proto", "hooks"} & ignored


def test_the_cpu_image_configs_differ_from_the_gpu_ones_only_in_instance_kind_and_accelerator(tmp_path):
    from cds_service.inference.triton_server import read_model_config

    shutil.copytree(ROOT / "model_repository", tmp_path / "models")
    subprocess.run(["sh", str(ROOT / "docker" / "cpu-model-config.sh"), str(tmp_path / "models")], check=True)
    configs = sorted((ROOT / "model_repository").glob("*/config.pbtxt"))
    assert len(configs) == 3
    for path in configs:
        gpu, cpu = read_model_config(path), read_model_config(tmp_path / "models" / path.parent.name / "config.pbtxt")
        assert not cpu.HasField("optimization")
        assert all(group.kind == group.KIND_CPU for group in cpu.instance_group)
        for group in gpu.instance_group:
            group.kind = group.KIND_CPU
        gpu.ClearField("optimization")
        assert cpu == gpu, path.parent.name  # tensors, batching, warm-up and parameters unchanged
    assert any(read_model_config(path).instance_group for path in configs)  # the rewrite had work to do
    dockerfile = (ROOT / "docker" / "triton.Dockerfile").read_text()
    assert "docker/cpu-model-config.sh" in dockerfile  # the image runs it, and the build context has it:
    assert "!docker/cpu-model-config.sh" in (ROOT / ".dockerignore").read_text()


# ---------------------------------------------------------------- schema validation


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_overlay_validates_strictly(overlay, version, tmp_path):
    text = rendered_text(overlay)
    validate = tool("kubernetes-validate")
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(text)
    result = subprocess.run(
        [validate, "--strict", "-k", version, str(manifest)], capture_output=True, text=True, check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, "\n".join(lines)
    passed = [line for line in lines if " passed for resource " in line]
    unknown = {m.group(1) for line in lines if (m := re.search(r"Couldn't find schema for kind (\w+)", line))}
    other = [line for line in lines if line not in passed and "Couldn't find schema" not in line]
    assert not other, other
    docs = rendered(overlay)
    custom = {doc["kind"] for doc in docs if doc["kind"] in CUSTOM_KINDS[overlay]}
    assert unknown == custom == CUSTOM_KINDS[overlay]
    assert len(passed) == sum(doc["kind"] not in custom for doc in docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate_against_their_schemas(overlay):
    text = rendered_text(overlay)
    python = K8S_VENV / "python"
    if not python.exists():
        missing(".venv-k8s is not installed")
    result = subprocess.run(
        [str(python), str(K8S / "schemas" / "validate_crds.py"), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checked = set(re.findall(r"^INFO (\w+)/", result.stdout, re.M))
    assert checked == CUSTOM_KINDS[overlay]


def test_crd_schemas_refuse_unknown_fields():
    python = K8S_VENV / "python"
    if not python.exists():
        missing(".venv-k8s is not installed")
    cluster = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "hipcad-db", "namespace": "hipcad"},
        "spec": {"instances": 3, "storage": {"size": "1Gi"}, "instancez": 1},
    }
    result = subprocess.run(
        [str(python), str(K8S / "schemas" / "validate_crds.py"), "-"],
        input=yaml.safe_dump(cluster),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "instancez" in result.stdout


# ---------------------------------------------------------------- checkov


@cache
def _checkov_report(tmp: Path) -> dict[str, dict]:
    checkov = tool("checkov")
    files = []
    for overlay in OVERLAYS:
        (tmp / f"{overlay}.yaml").write_text(rendered_text(overlay))
        files += ["-f", str(tmp / f"{overlay}.yaml")]
    files += ["-f", "Dockerfile", "-f", "docker/triton.Dockerfile"]
    result = subprocess.run(
        [checkov, *files, "--framework", "kubernetes", "dockerfile", "--skip-download", "--compact", "-o", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    return {run["check_type"]: run for run in (report if isinstance(report, list) else [report])}


def test_checkov_finds_nothing_unexplained(tmp_path_factory):
    report = _checkov_report(tmp_path_factory.mktemp("checkov"))
    assert set(report) == {"kubernetes", "dockerfile"}
    for framework, run in report.items():
        summary = run["summary"]
        failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in run["results"]["failed_checks"]]
        assert not failed, f"{framework}: {failed}"
        assert summary["parsing_errors"] == 0
        assert summary["passed"] > (500 if framework == "kubernetes" else 50)
        for check in run["results"]["skipped_checks"]:
            reason = check["check_result"].get("suppress_comment", "").strip()
            assert len(reason) > 20, f"{check['check_id']} on {check['resource']} skipped without a reason"
            assert check["resource"] in ALLOWED_SKIPS.get(check["check_id"], ()), (check["check_id"], check["resource"])
            if check["check_id"] in ("CKV_K8S_43", "CKV_K8S_40"):
                assert check["file_path"].endswith("dev.yaml"), "prod may not skip image digests or UIDs"


# ---------------------------------------------------------------- what the deployment relies on


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_probed_non_root_read_only_and_bounded(overlay):
    workloads = [doc for doc in rendered(overlay) if doc["kind"] in WORKLOAD_KINDS]
    assert {w["metadata"]["name"] for w in workloads} >= {"cds-service", "triton", "otel-collector"}
    for workload in workloads:
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where} {bound}"
        for container in spec["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{name}/{container['name']}: {probe}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cds_service_deployment(overlay):
    deployment = objects(overlay, "Deployment")["cds-service"]
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert container["args"] == ["serve"]
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert container["startupProbe"]["httpGet"] == {"path": "/startupz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    (migrate,) = spec["initContainers"]
    assert migrate["image"] == container["image"] and migrate["args"] == ["migrate"]
    assert {v["name"]: v for v in migrate["env"]}["HIPCAD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    (settings,) = [c["data"] for n, c in objects(overlay, "ConfigMap").items() if n.startswith("cds-service-config")]
    for path in ("/tmp", settings["HIPCAD_DICOM_FOLDER"], str(Path(settings["HIPCAD_FEEDBACK_DB"]).parent)):
        assert "emptyDir" in volumes[mounts[path]], path
    assert settings["HIPCAD_DICOM_FOLDER"] == "/var/lib/hipcad/dicom"
    assert settings["HIPCAD_FEEDBACK_DB"] == "/var/lib/hipcad/feedback.sqlite3"
    assert settings["HIPCAD_TRITON_URL"] == "triton:8001"
    assert settings["HIPCAD_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    issuers = json.loads(settings["HIPCAD_JWT_ISSUERS"])
    assert issuers and all(issuer["iss"] and issuer["jwks_url"].startswith("https://") for issuer in issuers)
    for allow_list in ("HIPCAD_FHIR_ALLOWED_BASES", "HIPCAD_DICOMWEB_ALLOWED_BASES"):
        assert all(base.startswith("https://") for base in json.loads(settings[allow_list]))

    assert settings["HIPCAD_METRICS_PORT"] == "9090"  # the container's `metrics` port: /metrics off `http`

    if overlay == "prod":
        assert objects(overlay, "HorizontalPodAutoscaler")["cds-service"]["spec"]["minReplicas"] >= 3
        assert objects(overlay, "PodDisruptionBudget")["cds-service"]["spec"]["minAvailable"] >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_confidential_settings_come_from_secrets_never_literals(overlay):
    docs = rendered(overlay)
    for config in (doc for doc in docs if doc["kind"] == "ConfigMap"):
        assert not CONFIDENTIAL & set(config.get("data", {})), config["metadata"]["name"]
    for workload in (doc for doc in docs if doc["kind"] in WORKLOAD_KINDS):
        spec = pod_spec(workload)
        for container in spec["containers"] + spec.get("initContainers", []):
            for variable in container.get("env", []):
                secret = variable["name"] in CONFIDENTIAL or variable["name"].endswith("_PASSWORD")
                if secret:
                    assert "value" not in variable and "secretKeyRef" in variable["valueFrom"], variable

    spec = pod_spec(objects(overlay, "Deployment")["cds-service"])
    for container in spec["containers"]:
        env = {v["name"]: v for v in container["env"]}
        for name in ("HIPCAD_DATABASE_URL", "HIPCAD_VIEWER_SECRET"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"].startswith("cds-service-secrets"), name

    secrets = objects(overlay, "Secret")
    if overlay == "prod":
        assert not secrets, "prod Secrets are created out of band (docs/kubernetes.md), never rendered"
        cluster = objects(overlay, "Cluster")["hipcad-db"]["spec"]
        assert cluster["instances"] == 3
        assert cluster["bootstrap"]["initdb"] == {
            "database": "hipcad",
            "owner": "hipcad",
            "secret": {"name": "hipcad-db-app"},
        }
    else:
        import base64

        (name,) = [n for n in secrets if n.startswith("cds-service-secrets")]
        values = {k: base64.b64decode(v).decode() for k, v in secrets[name]["data"].items()}
        assert set(values) == {"database-url", "viewer-secret", "dicomweb-credentials"}
        assert "dev-only" in values["database-url"] and "dev-only" in values["viewer-secret"]
        assert values["database-url"].startswith("postgresql+psycopg://hipcad:")
        assert "@hipcad-db-rw:5432/hipcad" in values["database-url"]
        assert "hipcad-db-rw" in objects(overlay, "Service")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_names_are_fields_of_settings(overlay):
    from cds_service.settings import Settings

    fields = {f"HIPCAD_{name.upper()}" for name in Settings.model_fields}
    names = set()
    for doc in rendered(overlay):
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("cds-service-config"):
            names |= set(doc["data"])
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "cds-service":
            names |= {v["name"] for c in pod_spec(doc)["containers"] for v in c["env"]}
    assert names and names <= fields, names - fields


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_allows_only_the_expected_ports(overlay):
    policy = objects(overlay, "NetworkPolicy")["cds-service"]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app": "cds-service"}}
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ingress = {(p["protocol"], p["port"]) for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress == {("TCP", 8080), ("TCP", 9090)}
    # /metrics (9090) is open to Prometheus' namespace only; the public port (8080) is not open to it.
    peers = {p["port"]: rule["from"] for rule in policy["ingress"] for p in rule["ports"]}
    assert peers[9090] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert "monitoring" not in json.dumps(peers[8080])
    assert all(rule.get("ports") for rule in policy["egress"]), "every egress rule names its ports"
    egress = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == EXPECTED_EGRESS
    by_port = {p["port"]: rule["to"] for rule in policy["egress"] for p in rule["ports"]}
    assert by_port[8001] == [{"podSelector": {"matchLabels": {"app": "triton"}}}]
    assert by_port[4318] == [{"podSelector": {"matchLabels": {"app": "otel-collector"}}}]
    assert by_port[5432] == [{"podSelector": {"matchLabels": {"app": "hipcad-db"}}}]
    assert all("ipBlock" in peer for peer in by_port[443])
    # The database pods carry the label the policy selects, in both overlays.
    if overlay == "prod":
        assert objects(overlay, "Cluster")["hipcad-db"]["spec"]["inheritedMetadata"]["labels"]["app"] == "hipcad-db"
    else:
        database = objects(overlay, "StatefulSet")["hipcad-db"]
        assert database["spec"]["template"]["metadata"]["labels"]["app"] == "hipcad-db"


def test_prod_triton_scales_on_queue_time_served_by_the_adapter_rule():
    hpa = objects("prod", "HorizontalPodAutoscaler")["triton"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "triton" and hpa["minReplicas"] >= 2
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    rules = objects("prod", "ConfigMap")["hipcad-prometheus-adapter-rules"]
    assert rules["metadata"]["namespace"] == "monitoring"
    (rule,) = yaml.safe_load(rules["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == name == "triton_queue_duration_us_per_request"
    query = " ".join(rule["metricsQuery"].split())
    assert re.search(
        r"rate\(nv_inference_queue_duration_us\{<<\.LabelMatchers>>\}\[1m\]\).*/.*"
        r"rate\(nv_inference_request_success\{<<\.LabelMatchers>>\}\[1m\]\)",
        query,
    )
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    monitor = objects("prod", "PodMonitor")["triton"]["spec"]
    assert monitor["selector"]["matchLabels"] == {"app": "triton"}
    assert monitor["podMetricsEndpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prod_triton_keeps_its_gpu_dev_runs_the_cpu_image_and_everything_lives_in_the_namespace(overlay):
    triton = pod_spec(objects(overlay, "Deployment")["triton"])
    container = triton["containers"][0]
    if overlay == "prod":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert triton["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    else:  # the CPU variant of the image (docker/cpu-model-config.sh): schedulable on any node
        assert container["image"].endswith(":0.1.0-cpu")
        assert "nvidia.com/gpu" not in json.dumps(triton)
        assert "nodeSelector" not in triton and "tolerations" not in triton
    outside = {
        f"{doc['kind']}/{doc['metadata']['name']}"
        for doc in rendered(overlay)
        if doc["kind"] != "Namespace" and doc["metadata"].get("namespace") != "hipcad"
    }
    assert outside == ({"ConfigMap/hipcad-prometheus-adapter-rules"} if overlay == "prod" else set())
    if overlay == "prod":
        images = [
            c["image"]
            for doc in rendered(overlay)
            if doc["kind"] in WORKLOAD_KINDS
            for c in pod_spec(doc)["containers"] + pod_spec(doc).get("initContainers", [])
        ]
        assert all(re.search(r"@sha256:[0-9a-f]{64}$", image) for image in images), images


# ---------------------------------------------------------------- rollouts, shutdown, outages, backups


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_replica_count_beside_an_autoscaler(overlay):
    """An HPA owns its target's replica count; `spec.replicas` would reset it on every apply."""
    scaled = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in objects(overlay, "HorizontalPodAutoscaler").values()}
    assert "cds-service" in scaled and (overlay == "dev" or "triton" in scaled)
    for name in scaled:
        assert "replicas" not in objects(overlay, "Deployment")[name]["spec"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cds_service_probes_do_not_depend_on_shared_dependencies_and_shutdown_drains(overlay):
    spec = pod_spec(objects(overlay, "Deployment")["cds-service"])
    (container,) = spec["containers"]
    startup = container["startupProbe"]
    # `serve` waits for an unreachable database before listening: the start-up probe allows 30 minutes.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5
    deadline = float(objects(overlay, "ConfigMap")[_config_name(overlay)]["data"]["HIPCAD_HOOK_DEADLINE_S"])
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + deadline + 5  # in-flight hooks finish
    (migrate,) = spec["initContainers"]
    assert migrate["args"] == ["migrate"]  # no --give-up-after: the init container waits out an outage


def _config_name(overlay: str) -> str:
    (name,) = [n for n in objects(overlay, "ConfigMap") if n.startswith("cds-service-config")]
    return name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_rolls_out_without_a_spare_gpu_one_pod_per_node(overlay):
    deployment = objects(overlay, "Deployment")["triton"]
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    spec = pod_spec(deployment)
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "triton"}}}
    assert spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] > 0


def test_prod_database_is_backed_up_with_a_retention_policy():
    cluster = objects("prod", "Cluster")["hipcad-db"]["spec"]
    backup = cluster["backup"]
    assert re.fullmatch(r"[1-9]\d*[dwm]", backup["retentionPolicy"])
    store = backup["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://")
    for key in ("accessKeyId", "secretAccessKey"):  # credentials from a Secret, never literals
        assert set(store["s3Credentials"][key]) == {"name", "key"}
    assert not objects("prod", "Secret")
    assert store["wal"]["compression"] and store["data"]["encryption"]
    (scheduled,) = objects("prod", "ScheduledBackup").values()
    assert scheduled["spec"]["cluster"] == {"name": "hipcad-db"}
    assert scheduled["spec"]["method"] == "barmanObjectStore" and scheduled["spec"]["immediate"] is True
    assert len(scheduled["spec"]["schedule"].split()) == 6  # CloudNativePG's cron has seconds first


def test_prod_prometheus_scrapes_the_metrics_port_not_the_public_one():
    (endpoint,) = objects("prod", "ServiceMonitor")["cds-service"]["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    service = objects("prod", "Service")["cds-service"]["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]} == {"http": 8080, "metrics": 9090}
