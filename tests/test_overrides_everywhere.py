"""One override syntax, one meaning: the same ``section.key=value`` strings fed to every package's config loader and
CLI give the same values and the same errors (naming the override and the file), all through infinity_run.config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bitwise_ar.train.__main__ import main as ar_train_main
from bitwise_ar.train.config import load_config as load_ar
from bsq_tokenizer.train.__main__ import main as tokenizer_train_main
from bsq_tokenizer.train.config import load_run_config as load_tokenizer
from infinity_data.cli import main as data_main
from infinity_data.config import load_config as load_data
from infinity_eval.cli import main as eval_main
from infinity_eval.suites import load_run_config as load_eval
from infinity_run.config import ConfigError, load_config, to_dict
from infinity_run.tracking import flatten
from infinity_service.cli import main as service_main
from infinity_service.config import ServiceFile


def _settings(config: Any) -> dict[str, Any]:
    return flatten(to_dict(config))


# name: (minimal TOML file, load(path, overrides) -> flat settings, run the CLI on (path, override) -> exit code,
#        loader-specific keys: a string, an int and a three-part nested key)
LOADERS: dict[str, tuple[str, Callable[[Path, list[str]], dict], Callable[[Path, str], int], dict[str, str]]] = {
    "bitwise-ar train": (
        "[run]\nout_dir = 'o'\n", lambda p, o: _settings(load_ar(p, o)), lambda p, o: ar_train_main([str(p), o]),
        {"str": "run.out_dir", "int": "run.seed", "nested": "model.overrides.depth"},
    ),
    "bsq-tokenizer train": (
        "[run]\nout_dir = 'o'\n", lambda p, o: _settings(load_tokenizer(p, o)),
        lambda p, o: tokenizer_train_main([str(p), o]),
        {"str": "run.out_dir", "int": "run.seed", "nested": "model.overrides.num_res_blocks"},
    ),
    "infinity-data curate": (
        "[input]\npaths = ['i']\n[output]\npath = 'o'\n", lambda p, o: _settings(load_data(p, o)),
        lambda p, o: data_main(["curate", "--config", str(p), o]),
        {"str": "output.path", "int": "ray.batch_size", "nested": "filters.dedup.near_radius"},
    ),
    "infinity-eval run": (
        "[run]\nsuite = 'shapes-demo'\nmodel = 'm'\nout = 'o'\n", lambda p, o: _settings(load_eval(p, o)),
        lambda p, o: eval_main(["run", "--config", str(p), o]),  # (or --set o)
        {"str": "run.out", "int": "run.seed", "nested": "generation.sampling.cfg"},
    ),
    "infinity-service": (
        "[service]\nport = 0\n", lambda p, o: _settings(load_config(ServiceFile, p, o)),
        lambda p, o: service_main(["--config", str(p), o]),
        {"str": "service.model_dir", "int": "service.port", "nested": "service.limits.max_count"},
    ),
}
TRACKED = [name for name in LOADERS if name != "infinity-service"]  # the service logs no runs: no [tracking]


def _flat_key(name: str, key: str) -> str:
    # The eval loader returns the resolved run config, whose [run] keys sit at its top level.
    return key.removeprefix("run.") if name == "infinity-eval run" else key


@pytest.fixture(params=list(LOADERS))
def loader(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "run.toml"
    path.write_text(LOADERS[request.param][0])
    return request.param, path


# (override with the loader's {str}/{int}/{nested} key, expected value of that key)
VALUES = [
    ('{str}="/tmp/x"', "/tmp/x"),  # TOML string: no quotes kept
    ("{str}=/tmp/x", "/tmp/x"),  # bare string: the same
    ("{str}='/tmp/a b'", "/tmp/a b"),
    ("{int}=7", 7),
    ("{nested}=1", 1),  # three parts: into a table of a table (or a free-form dict)
]


@pytest.mark.parametrize(("template", "expected"), VALUES)
def test_same_override_same_value(loader: tuple[str, Path], template: str, expected: Any) -> None:
    name, path = loader
    keys = LOADERS[name][3]
    override = template.format(**keys)
    key = override.split("=", 1)[0]
    assert LOADERS[name][1](path, [override])[_flat_key(name, key)] == expected


@pytest.mark.parametrize("name", TRACKED)
@pytest.mark.parametrize(
    ("override", "expected"),
    [('tracking.experiment="/tmp/x"', "/tmp/x"), ("tracking.experiment=/tmp/x", "/tmp/x"),
     ("tracking.experiment=2024", "2024"), ("tracking.kind=mlflow", "mlflow"),
     ("tracking.tracking_uri=sqlite:///tmp/m.db", "sqlite:///tmp/m.db")],
)  # fmt: skip
def test_identical_strings_identical_values(name: str, override: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(LOADERS[name][0])
    key = override.split("=", 1)[0]
    assert LOADERS[name][1](path, [override])[key] == expected


# (override, texts the error must contain besides the override itself and the file)
ERRORS = [
    ("{int}=abc", ["expected an integer, got 'abc'"]),
    ("{section}.nope=1", ["unknown key 'nope' in {section}; valid keys: ["]),
    ("nosuchsection.key=1", ["unknown key 'nosuchsection' in the top level"]),
    ("{str}.deeper=1", ["is not a table"]),
    ("{str}", ["must look like section.key=value"]),
]


@pytest.mark.parametrize(("template", "needles"), ERRORS)
def test_same_bad_override_same_error_naming_it_and_the_file(
    loader: tuple[str, Path], template: str, needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    name, path = loader
    keys = LOADERS[name][3]
    section = keys["str"].split(".")[0]
    override = template.format(section=section, **keys)
    needles = [f"override {override!r}", str(path), *(n.format(section=section) for n in needles)]
    with pytest.raises(ConfigError) as err:
        LOADERS[name][1](path, [override])
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    # The command line reports the same message as one line, exit code 2, before any work starts.
    capsys.readouterr()
    assert LOADERS[name][2](path, override) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in needles), lines
