"""The host-app snippets of README.md and docs/quickstart.md, run as they are written.

The worker, ``bgjobs scheduler`` and ``bgjobs trigger`` import the host's job modules, so a snippet
that sends at import would send once per process that imports it. Each snippet is saved as a
module, imported (twice, as a worker and a scheduler would) under ``stub_jobs()``, then its handler
is called: exactly one email must go out, and only when the handler is called.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _snippet(document: str, heading: str) -> str:
    text = (ROOT / document).read_text()
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r} in {document}"
    return match.group(1)


@pytest.mark.parametrize(
    ("document", "heading"),
    [("README.md", "## A host app"), ("docs/quickstart.md", "## 3. Declare a job and send it")],
)
def test_the_snippet_sends_when_its_handler_is_called_and_never_at_import(
    document: str, heading: str, tmp_path: Path
) -> None:
    (tmp_path / "myapp_jobs.py").write_text(_snippet(document, heading))
    script = f"""
import importlib, sys
sys.path.insert(0, {str(tmp_path)!r})
from bgjobs.settings import Settings
from bgjobs.testing import stub_jobs

with stub_jobs(settings=Settings(broker_url="stub://", database_url="sqlite:///{tmp_path}/s.db")) as jobs:
    module = importlib.import_module("myapp_jobs")
    importlib.reload(module)  # imported again, as by a second process
    jobs.drain()
    assert jobs.mailer.sent == [], jobs.mailer.sent
    module.on_signup(42, "ann@example.com")
    jobs.drain()
    print(len(jobs.mailer.sent), jobs.mailer.sent[0].to[0], jobs.mailer.sent[0].subject)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "ann@example.com", "Welcome"]
