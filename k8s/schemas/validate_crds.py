"""Validate the custom resources in rendered manifests against the JSON schemas in this folder.

kubernetes-validate bundles the schemas of Kubernetes' own kinds only; for a custom resource
(CloudNativePG ``Cluster``, Prometheus Operator ``PodMonitor``/``ServiceMonitor``) it prints
"Couldn't find schema" and passes it. This script closes that gap for the kinds k8s/ uses: each
``<group>-<version>-<Kind>.json`` here describes the fields we use (unknown fields refused), and a
custom resource without a schema is an error, not a silent pass.

Run with the k8s tools' interpreter (jsonschema and PyYAML come with kubernetes-validate):

    kubectl kustomize k8s/overlays/prod | .venv-k8s/bin/python k8s/schemas/validate_crds.py -

Prints one line per custom resource and exits non-zero on the first invalid or unknown one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent


def is_builtin(api_version: str) -> bool:
    """Kinds whose schemas kubernetes-validate has: the core group and the *.k8s.io groups."""
    group = api_version.rpartition("/")[0]
    return group in ("", "apps", "batch", "autoscaling", "policy") or group.endswith(".k8s.io")


def schema_path(api_version: str, kind: str) -> Path:
    group, _, version = api_version.rpartition("/")
    return SCHEMAS / f"{group}-{version}-{kind}.json"


def main(argv: list[str]) -> int:
    source = sys.stdin.read() if argv[1:] in ([], ["-"]) else Path(argv[1]).read_text()
    errors = 0
    checked = 0
    for doc in yaml.safe_load_all(source):
        if not doc or is_builtin(doc["apiVersion"]):
            continue
        name = f"{doc['kind']}/{doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
        path = schema_path(doc["apiVersion"], doc["kind"])
        if not path.exists():
            print(f"ERROR {name}: no schema for {doc['apiVersion']} {doc['kind']} (expected {path.name})")
            errors += 1
            continue
        validator = Draft202012Validator(json.loads(path.read_text()))
        problems = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for problem in problems:
            where = ".".join(str(p) for p in problem.absolute_path) or "(root)"
            print(f"ERROR {name}: {where}: {problem.message}")
        errors += len(problems)
        checked += 1
        if not problems:
            print(f"INFO {name} ({doc['apiVersion']}) passed against {path.name}")
    print(f"{checked} custom resources checked, {errors} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
