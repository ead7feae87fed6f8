"""Validate the custom resources in deploy/k8s/ against their CRDs' published schemas.

``kubernetes-validate`` knows only the core kinds; the RabbitmqCluster and the KEDA ScaledObject
are checked here with ``jsonschema`` (Draft 7) against the openAPIV3 schemas copied into
``schemas/`` (public CRD schemas, so CI needs nothing outside the repository). A custom kind
with no schema here fails: nothing in deploy/k8s/ goes unchecked.

    uv run python deploy/k8s/validate_custom_resources.py [FILE ...]   # default: deploy/k8s/*.yaml
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

HERE = Path(__file__).resolve().parent
SCHEMAS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): HERE / "schemas/rabbitmqcluster_v1beta1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): HERE / "schemas/scaledobject_v1alpha1.json",
}
# API groups kubernetes-validate checks (core and the built-in groups).
CORE_GROUPS = {
    "v1",
    "apps",
    "batch",
    "networking.k8s.io",
    "policy",
    "autoscaling",
    "rbac.authorization.k8s.io",
}


def documents(paths: Sequence[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def is_core(api_version: str) -> bool:
    return api_version.split("/")[0] in CORE_GROUPS


def validate(paths: Sequence[Path]) -> list[str]:
    """Every problem found, as ``file: kind name: message`` lines (empty when all is valid)."""
    problems: list[str] = []
    seen = 0
    for path, doc in documents(paths):
        key = (doc.get("apiVersion", ""), doc.get("kind", ""))
        where = f"{path.name}: {key[1]} {doc.get('metadata', {}).get('name', '?')}"
        if is_core(key[0]):
            continue
        schema_path = SCHEMAS.get(key)
        if schema_path is None:
            problems.append(f"{where}: no schema for {key[0]} {key[1]}")
            continue
        seen += 1
        validator = Draft7Validator(json.loads(schema_path.read_text()))
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            location = "/".join(str(p) for p in error.absolute_path) or "(document)"
            problems.append(f"{where}: {location}: {error.message}")
    if seen == 0:
        problems.append("no custom resource found")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] or sorted(HERE.glob("*.yaml"))
    problems = validate(paths)
    for problem in problems:
        sys.stderr.write(problem + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
