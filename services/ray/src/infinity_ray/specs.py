"""Ray job specs: a YAML file per workload (entrypoint, resources, runtime environment) and their validation.

A spec file looks like::

    name: train-debug
    description: two-minute debug training run
    entrypoint: bitwise-ar train --config configs/train/debug.toml
    entrypoint_num_cpus: 1
    entrypoint_num_gpus: 0
    runtime_env:
      working_dir: .            # relative to the repository root; uploaded at submission
      excludes: [".venv", ".git", "outputs"]
      env_vars: {OMP_NUM_THREADS: "1"}
    metadata: {workload: train}

``submit_command`` turns it into the ``ray job submit`` command line; ``entrypoint_problems`` checks that the program
it runs exists in this repository (a console script declared by a workspace package, or ``python -m <module>``).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infinity_run.config import split_override

__all__ = [
    "JobSpec",
    "entrypoint_problems",
    "load_job_spec",
    "repo_root",
    "spec_dir",
    "submit_command",
    "workspace_scripts",
]

_ALLOWED_KEYS = frozenset(
    {"name", "description", "entrypoint", "entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory",
     "entrypoint_resources", "runtime_env", "metadata"}
)  # fmt: skip
_RUNTIME_ENV_KEYS = frozenset(
    {"working_dir", "excludes", "env_vars", "py_modules", "pip", "uv", "conda", "container", "image_uri", "config",
     "py_executable", "nsight"}
)  # fmt: skip


def repo_root(start: Path | None = None) -> Path:
    """The repository root: the nearest parent holding a ``pyproject.toml`` with a ``[tool.uv.workspace]`` table."""
    here = (start or Path(__file__)).resolve()
    for parent in [here, *here.parents]:
        candidate = parent / "pyproject.toml"
        if (
            candidate.is_file()
            and "tool" in (doc := tomllib.loads(candidate.read_text()))
            and "workspace" in doc["tool"].get("uv", {})
        ):
            return parent
    raise FileNotFoundError(f"no uv workspace root above {here}; run from a checkout of the repository")


def spec_dir() -> Path:
    """The directory of the shipped job specs (``services/ray/jobs``)."""
    return Path(__file__).resolve().parents[2] / "jobs"


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One Ray job: what to run, with which resources, in which runtime environment."""

    name: str
    entrypoint: str
    description: str = ""
    entrypoint_num_cpus: float = 1.0
    entrypoint_num_gpus: float = 0.0
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    source: Path | None = None

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source else ""
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"job name must be letters, digits, '-' or '_', got {self.name!r}{where}")
        if not self.entrypoint.strip():
            raise ValueError(f"job {self.name!r} has an empty entrypoint{where}; give the command to run")
        try:
            shlex.split(self.entrypoint)
        except ValueError as err:
            raise ValueError(f"job {self.name!r}: entrypoint is not a valid shell command ({err}){where}") from None
        if self.entrypoint_num_cpus < 0 or self.entrypoint_num_gpus < 0:
            raise ValueError(f"job {self.name!r}: entrypoint_num_cpus/gpus must be >= 0{where}")
        unknown = set(self.runtime_env) - _RUNTIME_ENV_KEYS
        if unknown:
            raise ValueError(
                f"job {self.name!r}: unknown runtime_env keys {sorted(unknown)}{where}; valid keys: {sorted(_RUNTIME_ENV_KEYS)}"
            )
        env_vars = self.runtime_env.get("env_vars", {})
        if not isinstance(env_vars, dict) or not all(isinstance(v, str) for v in env_vars.values()):
            raise ValueError(
                f"job {self.name!r}: runtime_env.env_vars must map names to strings (quote numbers){where}"
            )

    def resolved_runtime_env(self, root: Path | None = None) -> dict[str, Any]:
        """The runtime env with ``working_dir`` made absolute (relative paths are relative to the repository root)."""
        env = json.loads(json.dumps(self.runtime_env))
        working_dir = env.get("working_dir")
        if working_dir is not None and "://" not in str(working_dir):
            base = root or repo_root()
            env["working_dir"] = str((base / working_dir).resolve())
        return env


def load_job_spec(path: str | Path) -> JobSpec:
    """Read a job spec YAML file; unknown keys are rejected with the valid names."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"job spec {path} not found; shipped specs are in {spec_dir()}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file (expected a YAML job spec)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}{where}: not valid YAML ({problem})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must hold a mapping with at least 'name' and 'entrypoint'")
    unknown = set(doc) - _ALLOWED_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; valid keys: {sorted(_ALLOWED_KEYS)}")
    missing = {"name", "entrypoint"} - set(doc)
    if missing:
        raise ValueError(f"{path}: missing required keys {sorted(missing)}")
    return JobSpec(**doc, source=path)


def workspace_scripts(root: Path | None = None) -> dict[str, str]:
    """Console scripts declared by the workspace packages: ``{script name: "module:function"}``."""
    root = root or repo_root()
    scripts: dict[str, str] = {}
    for pyproject in [*root.glob("packages/*/pyproject.toml"), *root.glob("services/*/pyproject.toml")]:
        doc = tomllib.loads(pyproject.read_text())
        scripts.update(doc.get("project", {}).get("scripts", {}))
    return scripts


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def entrypoint_problems(spec: JobSpec, root: Path | None = None) -> list[str]:
    """Why the entrypoint would not start in this repository (empty list: it would).

    Accepted programs: ``python -m <module>`` with an importable module, or a console script declared by a
    workspace package whose target module is importable (checked without importing it). Leading ``VAR=value``
    assignments are skipped. A ``--config FILE`` argument must name a file of the repository.
    """
    argv = shlex.split(spec.entrypoint)
    while argv and "=" in argv[0] and not argv[0].startswith("-"):
        argv = argv[1:]
    if not argv:
        return [f"{spec.name}: entrypoint has no program"]
    program = argv[0]
    if program in ("python", "python3"):
        if len(argv) >= 3 and argv[1] == "-m":
            return [] if _module_exists(argv[2]) else [f"{spec.name}: module {argv[2]!r} is not importable"]
        if len(argv) >= 2:
            script = (root or repo_root()) / argv[1]
            return [] if script.is_file() else [f"{spec.name}: script {argv[1]!r} not found in the repository"]
        return [f"{spec.name}: bare 'python' entrypoint; give -m <module> or a script path"]
    problems = _config_file_problems(spec, argv, root or repo_root())
    scripts = workspace_scripts(root)
    if program not in scripts:
        return [
            *problems,
            f"{spec.name}: {program!r} is not a console script of this workspace (known: {sorted(scripts)})",
        ]
    module = scripts[program].split(":", 1)[0]
    if not _module_exists(module):
        problems.append(
            f"{spec.name}: console script {program!r} points at {scripts[program]!r}, whose module is missing"
        )
    return problems


def _config_file_problems(spec: JobSpec, argv: list[str], root: Path) -> list[str]:
    """``--config FILE`` arguments must name a file of the repository (the working_dir shipped with the job)."""
    problems = []
    for flag, value in itertools.pairwise(argv):
        if flag == "--config" and not (root / value).is_file():
            problems.append(f"{spec.name}: config file {value!r} does not exist in the repository")
    return problems


PASSED_ENV_VARS = ("MLFLOW_TRACKING_URI",)
"""Variables of the submitting shell handed to the job (unless the spec sets them), so a job tracks where its user
does."""


def submit_command(
    spec: JobSpec,
    address: str,
    *,
    submission_id: str | None = None,
    wait: bool = True,
    root: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
) -> list[str]:
    """The ``ray job submit`` argv that runs ``spec`` on the cluster whose dashboard is at ``address``; ``overrides``
    (``section.key=value``) are appended to the entrypoint, and :data:`PASSED_ENV_VARS` set in ``environ`` are passed
    to the job."""
    for item in overrides:
        if item.startswith("-"):
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. run.out_dir=/shared/runs/x)")
        split_override(item)  # the entry points' own syntax (infinity_run.config); a ValueError naming the item
    cmd = ["ray", "job", "submit", "--address", address]
    if submission_id:
        cmd += ["--submission-id", submission_id]
    runtime_env = spec.resolved_runtime_env(root)
    env_vars = dict(runtime_env.get("env_vars", {}))
    for name in PASSED_ENV_VARS:
        value = (environ if environ is not None else os.environ).get(name)
        if value and name not in env_vars:
            env_vars[name] = value
    if env_vars:
        runtime_env["env_vars"] = env_vars
    if runtime_env:
        cmd += ["--runtime-env-json", json.dumps(runtime_env, sort_keys=True)]
    cmd += ["--entrypoint-num-cpus", f"{spec.entrypoint_num_cpus:g}"]
    if spec.entrypoint_num_gpus:
        cmd += ["--entrypoint-num-gpus", f"{spec.entrypoint_num_gpus:g}"]
    if spec.entrypoint_memory:
        cmd += ["--entrypoint-memory", str(spec.entrypoint_memory)]
    if spec.entrypoint_resources:
        cmd += ["--entrypoint-resources", json.dumps(spec.entrypoint_resources, sort_keys=True)]
    if spec.metadata:
        cmd += ["--metadata-json", json.dumps(spec.metadata, sort_keys=True)]
    if not wait:
        cmd.append("--no-wait")
    return [*cmd, "--", *shlex.split(spec.entrypoint), *overrides]
