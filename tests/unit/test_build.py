"""The build reproduces: CI installs the tools the lock pins and runs README's test command."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"] if "version" in package}


def test_ci_installs_nox_and_uv_at_the_versions_the_lock_pins() -> None:
    pins = dict(re.findall(r"'(nox|uv)(?:\[uv\])?==([^']+)'", (ROOT / ".ci" / "run").read_text()))
    locked = _locked_versions()
    assert pins == {"nox": locked["nox"], "uv": locked["uv"]}


def test_the_lock_pins_one_version_of_redis_py_that_the_ranges_allow() -> None:
    # The build that broke on fresh machines resolved a redis-py nobody had tested with.
    assert re.fullmatch(r"\d+\.\d+\.\d+", _locked_versions()["redis"])
    assert '"redis>=' in (ROOT / "pyproject.toml").read_text()


def test_ci_runs_the_test_command_readme_gives() -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"&& (nox -s tests)\n", readme)
    assert command is not None
    assert re.search(rf"^{re.escape(command.group(1))}$", (ROOT / ".ci" / "run").read_text(), re.M)
