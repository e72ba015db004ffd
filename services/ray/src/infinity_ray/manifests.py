"""Cluster definitions: the Ray cluster launcher YAML and the KubeRay ``RayCluster``/``RayJob`` manifests.

``launcher_problems`` validates a launcher file against the JSON schema that ships with Ray (the one ``ray up``
uses) plus the cross-field rules ``ray up`` enforces; ``kuberay_problems`` checks the fields the KubeRay operator
requires. ``rayjob_manifest`` renders a job spec as a ``RayJob`` that runs on the shared ``RayCluster`` (the
committed ``kuberay/rayjob-*.yaml`` files are exactly its output, which the tests check).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .specs import JobSpec

__all__ = [
    "dump_manifest",
    "kuberay_problems",
    "launcher_problems",
    "load_yaml_documents",
    "manifest_dir",
    "rayjob_manifest",
]

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def manifest_dir() -> Path:
    """``services/ray`` (holds ``cluster/``, ``kuberay/``, ``jobs/``)."""
    return Path(__file__).resolve().parents[2]


def load_yaml_documents(path: str | Path) -> list[Any]:
    """All YAML documents in ``path`` (empty documents dropped)."""
    import yaml

    with open(path) as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def launcher_problems(config: dict[str, Any]) -> list[str]:
    """Problems ``ray up`` would report for a cluster launcher config (empty list: valid)."""
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    problems = [f"schema: {err.message} at {'/'.join(map(str, err.path))}" for err in
                jsonschema.Draft7Validator(schema).iter_errors(config)]  # fmt: skip
    if problems:
        return problems  # cross-field rules assume the schema's types
    types = config.get("available_node_types", {})
    head = config.get("head_node_type")
    if head not in types:
        problems.append(f"head_node_type {head!r} is not one of available_node_types {sorted(types)}")
    max_workers = config.get("max_workers", 0)
    if sum(t.get("min_workers", 0) for t in types.values()) > max_workers:
        problems.append("sum of min_workers exceeds the global max_workers")
    for name, node in types.items():
        if node.get("max_workers", 0) > max_workers:
            problems.append(f"node type {name}: max_workers {node['max_workers']} > global max_workers {max_workers}")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        if not any("ray start" in cmd for cmd in config.get(key, [])):
            problems.append(f"{key} must contain a `ray start` command")
    if not any("uv sync --locked" in cmd for cmd in config.get("setup_commands", [])):
        problems.append("setup_commands must install the locked environment (`uv sync --locked`)")
    return problems


def _container_problems(where: str, pod_template: dict[str, Any]) -> list[str]:
    containers = pod_template.get("spec", {}).get("containers", [])
    if not containers:
        return [f"{where}: template.spec.containers is empty"]
    problems = []
    for container in containers:
        if not container.get("name") or not container.get("image"):
            problems.append(f"{where}: every container needs a name and an image")
        resources = container.get("resources", {})
        if "limits" not in resources:
            problems.append(f"{where}: container {container.get('name')!r} has no resource limits")
    return problems


def kuberay_problems(doc: dict[str, Any]) -> list[str]:
    """Structural problems of a KubeRay ``RayCluster`` or ``RayJob`` manifest (empty list: valid)."""
    problems: list[str] = []
    if doc.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion must be ray.io/v1, got {doc.get('apiVersion')!r}")
    name = doc.get("metadata", {}).get("name", "")
    if not _DNS1123.match(name or ""):
        problems.append(f"metadata.name {name!r} must be a DNS-1123 label")
    spec = doc.get("spec", {})
    kind = doc.get("kind")
    if kind == "RayCluster":
        problems += _raycluster_problems(spec)
    elif kind == "RayJob":
        if not spec.get("entrypoint"):
            problems.append("RayJob spec.entrypoint is required")
        has_cluster = "rayClusterSpec" in spec
        has_selector = bool(spec.get("clusterSelector"))
        if has_cluster == has_selector:
            problems.append("RayJob needs exactly one of spec.rayClusterSpec or spec.clusterSelector")
        if has_cluster:
            problems += _raycluster_problems(spec["rayClusterSpec"])
        if "runtimeEnvYAML" in spec:
            import yaml

            try:
                env = yaml.safe_load(spec["runtimeEnvYAML"])
            except yaml.YAMLError as err:
                problems.append(f"runtimeEnvYAML does not parse: {err}")
            else:
                if not isinstance(env, dict):
                    problems.append("runtimeEnvYAML must be a mapping")
        if spec.get("submissionMode", "K8sJobMode") not in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"):
            problems.append(f"unknown submissionMode {spec.get('submissionMode')!r}")
    else:
        problems.append(f"kind must be RayCluster or RayJob, got {kind!r}")
    return problems


def _raycluster_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    if not spec.get("rayVersion"):
        problems.append("RayCluster spec.rayVersion is required")
    head = spec.get("headGroupSpec")
    if not head:
        return [*problems, "RayCluster spec.headGroupSpec is required"]
    if "rayStartParams" not in head:
        problems.append("headGroupSpec.rayStartParams is required (may be {})")
    problems += _container_problems("headGroupSpec", head.get("template", {}))
    for group in spec.get("workerGroupSpecs", []):
        where = f"workerGroupSpecs[{group.get('groupName')}]"
        if not group.get("groupName"):
            problems.append("every worker group needs a groupName")
        lo, hi, replicas = group.get("minReplicas", 0), group.get("maxReplicas", 0), group.get("replicas", 0)
        if not lo <= replicas <= hi:
            problems.append(f"{where}: need minReplicas <= replicas <= maxReplicas, got {lo} <= {replicas} <= {hi}")
        if "rayStartParams" not in group:
            problems.append(f"{where}: rayStartParams is required (may be {{}})")
        problems += _container_problems(where, group.get("template", {}))
    return problems


def rayjob_manifest(spec: JobSpec, *, cluster_name: str = "infinity") -> dict[str, Any]:
    """A ``RayJob`` running ``spec`` on the existing ``RayCluster`` named ``cluster_name``.

    The code is in the cluster image, so ``working_dir``/``excludes`` are dropped from the runtime env.
    """
    import yaml

    runtime_env = {k: v for k, v in spec.runtime_env.items() if k not in ("working_dir", "excludes")}
    job: dict[str, Any] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": f"infinity-{spec.name}".replace("_", "-"),
            "labels": {"app.kubernetes.io/part-of": "infinity"},
        },
        "spec": {
            "entrypoint": spec.entrypoint,
            "clusterSelector": {"ray.io/cluster": cluster_name},
            "submissionMode": "HTTPMode",
            "entrypointNumCpus": spec.entrypoint_num_cpus,
        },
    }
    if spec.entrypoint_num_gpus:
        job["spec"]["entrypointNumGpus"] = spec.entrypoint_num_gpus
    if runtime_env:
        job["spec"]["runtimeEnvYAML"] = yaml.safe_dump(runtime_env, sort_keys=True)
    if spec.metadata:
        job["spec"]["metadata"] = dict(spec.metadata)
    return job


def dump_manifest(doc: dict[str, Any]) -> str:
    """YAML text of a manifest, multi-line strings (``runtimeEnvYAML``) as literal blocks."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)
