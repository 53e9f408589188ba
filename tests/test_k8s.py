"""The Kustomize manifests parse, reference files that exist, and wire the service to Triton."""

from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[1] / "k8s"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_every_kustomization_resource_exists_and_parses():
    for kustomization in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text()).get("resources", []):
            target = (kustomization.parent / resource).resolve()
            assert target.exists(), f"{kustomization}: {resource}"
            for path in [target] if target.is_file() else [target / "kustomization.yaml"]:
                assert documents(path)


def test_triton_runs_on_gpu_nodes_and_the_service_points_at_it():
    triton = next(d for d in documents(K8S / "base" / "triton.yaml") if d["kind"] == "Deployment")
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    literals = base["configMapGenerator"][0]["literals"]
    assert "HIPCAD_TRITON_URL=triton:8001" in literals
