"""infinity_ray: Ray cluster definitions, job specs and a submit helper for Infinity training, curation and eval.

Importing this package does not import Ray; only ``local``, ``smoke`` and ``manifests.launcher_problems`` do.
"""

from .manifests import kuberay_problems, launcher_problems, load_yaml_documents, manifest_dir, rayjob_manifest
from .specs import JobSpec, entrypoint_problems, load_job_spec, repo_root, spec_dir, submit_command, workspace_scripts

__all__ = [
    "JobSpec",
    "entrypoint_problems",
    "kuberay_problems",
    "launcher_problems",
    "load_job_spec",
    "load_yaml_documents",
    "manifest_dir",
    "rayjob_manifest",
    "repo_root",
    "spec_dir",
    "submit_command",
    "workspace_scripts",
]
