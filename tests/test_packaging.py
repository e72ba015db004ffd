"""Packaging: every workspace member builds a wheel with its licence and clean metadata, installs alone into a fresh
virtual environment (imports, console scripts), and the README's quickstart installs only what the demo needs.

Installs run offline from the uv cache that `uv sync` filled (uv links files from its cache, so a fresh environment
with torch takes about a second), falling back to the index when the cache lacks something.
"""

from __future__ import annotations

import ast
import email.parser
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
# Each member, discovered from the workspace globs (a package added later is covered without editing this file).
MEMBERS = sorted(
    Path(p) for pattern in ROOT["tool"]["uv"]["workspace"]["members"] for p in glob.glob(str(REPO / pattern))
    if (Path(p) / "pyproject.toml").is_file()
)
PROJECTS = {m: tomllib.loads((m / "pyproject.toml").read_text(encoding="utf-8"))["project"] for m in MEMBERS}
NAMES = {project["name"] for project in PROJECTS.values()}
# What only tests, benchmarks and linting use; never a requirement of a published package.
TEST_ONLY = {"pytest", "pytest-timeout", "hypothesis", "ruff", "httpx", "scipy"}
# Core requirements that no module imports, each with the reason it is needed anyway.
NOT_IMPORTED_BUT_NEEDED = {
    ("infinity-mlflow-server", "mlflow"): "the server runs the `mlflow server` command",
}
pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")


def _uv(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["uv", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _import_roots(src: Path) -> set[str]:
    """Top-level names imported anywhere under ``src`` (absolute imports only)."""
    roots: set[str] = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                roots.add(node.module.split(".")[0])
    return roots


def _distributions_of(import_names: set[str]) -> set[str]:
    from importlib.metadata import packages_distributions

    found = packages_distributions()
    return {d.lower().replace("_", "-") for name in import_names for d in found.get(name, [name.replace("_", "-")])}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    dist = tmp_path_factory.mktemp("dist")
    proc = _uv("build", "--all-packages", "--wheel", "--offline", "-o", str(dist))
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = {}
    for wheel in dist.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            name = email.parser.Parser().parsestr(archive.read(meta_name).decode())["Name"]
        built[name] = wheel
    return built


def test_every_member_wheel_ships_the_licence_and_clean_metadata(wheels):
    assert set(wheels) == NAMES  # one wheel per workspace member
    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License")
    problems = []
    for member, project in PROJECTS.items():
        name = project["name"]
        with zipfile.ZipFile(wheels[name]) as archive:
            files = archive.namelist()
            shipped = [n for n in files if n.endswith(".dist-info/licenses/LICENSE")]
            if len(shipped) != 1 or archive.read(shipped[0]).decode() != licence:
                problems.append(f"{name}: the wheel does not ship the root LICENSE")
            meta = email.parser.Parser().parsestr(
                archive.read(next(n for n in files if n.endswith(".dist-info/METADATA"))).decode()
            )
        if meta["License-Expression"] != "MIT":
            problems.append(f"{name}: License-Expression is {meta['License-Expression']!r}")
        for field in ("Author", "Project-URL", "Classifier", "Requires-Python", "Summary"):
            if not meta.get_all(field) and not (field == "Author" and meta.get_all("Author-email")):
                problems.append(f"{name}: no {field}")
        core_imports = _distributions_of(_import_roots(member / "src"))
        for requirement in meta.get_all("Requires-Dist") or []:
            dep = _requirement_name(requirement)
            if dep in TEST_ONLY:
                problems.append(f"{name}: test-only requirement {requirement!r}")
            if dep in NAMES and not re.search(r">=\s*[\d.]+\s*,\s*<\s*[\d.]+", requirement):
                problems.append(f"{name}: workspace requirement without >=x,<y bounds: {requirement!r}")
            is_core = "extra ==" not in requirement
            if is_core and dep not in core_imports and (name, dep) not in NOT_IMPORTED_BUT_NEEDED:
                problems.append(f"{name}: core requirement {dep!r} is imported by none of its modules")
    assert problems == []


def _install_alone(member: Path, venv: Path) -> Path:
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    proc = _uv("venv", "-q", "--python", py, str(venv))
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    target = "./" + str(member.relative_to(REPO))  # the README's `uv pip install ./packages/NAME`
    proc = _uv("pip", "install", "-q", "--offline", "--python", str(python), target)
    if proc.returncode != 0:
        proc = _uv("pip", "install", "-q", "--python", str(python), target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return python


def _installed(python: Path) -> set[str]:
    proc = _uv("pip", "list", "--python", str(python), "--format", "freeze")
    return {line.split("==")[0].split(" @ ")[0].lower() for line in proc.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize("member", MEMBERS, ids=[m.name for m in MEMBERS])
def test_each_member_installs_alone_in_a_fresh_environment(member, tmp_path):
    project = PROJECTS[member]
    python = _install_alone(member, tmp_path / "venv")
    packages = sorted(p.name for p in (member / "src").iterdir() if (p / "__init__.py").is_file())
    code = f"import importlib; [importlib.import_module(m) for m in {packages!r}]"
    run = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for script in project.get("scripts", {}):
        run = subprocess.run([str(python.parent / script), "--help"], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and "usage:" in run.stdout, run.stderr[-3000:]
    installed = _installed(python)
    own = {_requirement_name(d) for d in project.get("dependencies", [])}
    if not own:  # standard library only: nothing but the package itself
        assert installed == {project["name"]}
    if project["name"] == "infinity-data":  # the curation core runs on CPU workers without torch
        assert "torch" not in installed and "bsq-tokenizer" not in installed
        run = subprocess.run(
            [str(python), "-c", "from infinity_data.filters.watermark import WatermarkScorer, WatermarkConfig\n"
                                "WatermarkScorer(WatermarkConfig(weights='w.pth'))"],
            capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 1 and "pip install 'infinity-data[models]'" in run.stderr, run.stderr[-2000:]


@pytest.mark.parametrize("name", ["infinity-scales", "infinity-data"])
def test_uv_sync_package_gives_an_environment_with_that_package_only(name, tmp_path):
    """docs/install.md's `uv sync --package NAME --no-default-groups`, from the lock, into a new environment."""
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "env")}
    env.pop("VIRTUAL_ENV", None)
    proc = _uv("sync", "--locked", "--offline", "--package", name, "--no-default-groups", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed = _installed(tmp_path / "env" / "bin" / "python")
    assert name in installed and "pytest" not in installed and "torch" not in installed
    assert (name == "infinity-scales") == (installed == {name})  # standard library only: nothing else


def _quickstart() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).strip().splitlines()


def test_readme_quickstart_is_lean_and_its_test_command_is_what_ci_runs(tmp_path):
    generate, tests = _quickstart()
    assert tests == "uv run pytest"
    assert any(line.strip() == tests for line in (REPO / ".ci" / "run").read_text().splitlines())
    argv = shlex.split(generate)
    assert argv[:2] == ["uv", "run"] and "bitwise-ar" in argv and "generate" in argv
    # Run it as a fresh clone would: a new project environment, filled from the lock (offline, from the uv cache).
    # It holds bitwise-ar's own requirements only, so this is also `pip install bitwise-ar` + the packaged demo
    # (the slowest test here: a fresh environment has no compiled bytecode for torch and transformers).
    argv = [a.replace("outputs/", f"{tmp_path}/") for a in argv]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "env")}
    env.pop("VIRTUAL_ENV", None)
    run = subprocess.run([*argv[:2], "--offline", *argv[2:]], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "demo.png").is_file() and (tmp_path / "demo_previews.png").is_file()
    installed = _installed(tmp_path / "env" / "bin" / "python")
    assert {"bitwise-ar", "bsq-tokenizer", "torch", "transformers"} <= installed
    heavy = {"ray", "mlflow", "playwright", "onnxruntime", "rapidocr", "fastapi", "pytest", "infinity-data"}
    assert installed & heavy == set()


def test_flash_attn_is_a_locked_extra_that_resolves_without_building():
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    packages = {p["name"]: p for p in lock["package"]}
    flash = packages["flash-attn"]
    assert "sdist" in flash and not flash.get("wheels")  # only an sdist exists: it is built on the CUDA node
    declared = {m["name"]: m for m in ROOT["tool"]["uv"]["dependency-metadata"]}["flash-attn"]
    assert flash["version"] == declared["version"]  # the declared metadata is what the lock resolved
    assert {"name": "flash-attn"} in packages["bitwise-ar"]["optional-dependencies"]["flash"]
    assert packages["infinity-workspace"]["optional-dependencies"]["flash"][0]["name"] == "bitwise-ar"
    assert "flash-attn" not in {d["name"] for d in packages["bitwise-ar"].get("dependencies", [])}
    build = ROOT["tool"]["uv"]["extra-build-dependencies"]["flash-attn"]
    assert {"requirement": "torch", "match-runtime": True} in build
    # The lock is current for these pyprojects, checked without network and without building flash-attn.
    proc = _uv("lock", "--check", "--offline")
    assert proc.returncode == 0, proc.stderr
    # The default sync leaves it out; the documented command for CUDA nodes brings it in.
    plain = _uv("export", "--locked", "--offline", "--no-hashes", "--all-packages")
    with_flash = _uv("export", "--locked", "--offline", "--no-hashes", "--all-packages", "--extra", "flash")
    assert plain.returncode == 0 and with_flash.returncode == 0, plain.stderr + with_flash.stderr
    assert "flash-attn" not in plain.stdout and "flash-attn==" in with_flash.stdout
