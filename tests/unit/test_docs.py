"""The docs site builds strictly, and what it says about settings, the CLI and the families is what
the code has: the build itself (docs/hooks/bgjobs_docs.py) checks the settings and generates the rest."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bgjobs_docs", ROOT / "docs" / "hooks" / "bgjobs_docs.py")
assert _spec is not None and _spec.loader is not None
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


def test_every_setting_is_documented_and_nothing_else() -> None:
    assert hooks.undocumented() == []
    assert hooks.unknown() == []
    from bgjobs.jobs import registered_jobs
    from bgjobs.settings import schedule_key

    text = hooks.CONFIGURATION.read_text()
    scheduled = [schedule_key(name) for name, spec in registered_jobs().items()
                 if spec.schedule and spec.fn.__module__.startswith("bgjobs.")]
    assert len(scheduled) >= 11
    assert [k for k in scheduled if f"BGJOBS_SCHEDULE__{k.upper()}" not in text] == []


def test_the_settings_check_notices_a_missing_or_made_up_setting() -> None:
    text = hooks.CONFIGURATION.read_text()
    without = "\n".join(line for line in text.splitlines() if "BGJOBS_HEALTH__MIN_WORKERS" not in line)
    assert hooks.undocumented(without) == ["BGJOBS_HEALTH__MIN_WORKERS"]
    assert hooks.unknown(text + "\n| `BGJOBS_HEALTH__MAX_COLOUR` | | |\n") == ["BGJOBS_HEALTH__MAX_COLOUR"]


def test_each_family_page_has_failure_modes_and_its_generated_reference() -> None:
    for family in hooks.FAMILIES:
        page = (ROOT / "docs" / f"{family}.md").read_text()
        assert re.search(r"^## Failure modes", page, re.M), family
        rendered = hooks.render(page)
        for part in ("### Settings", "### Cron entries", "### Events", "### Metrics"):
            assert part in rendered, (family, part)
        assert f"BGJOBS_{family.upper()}__" in rendered.split("### Settings", 1)[1]
    assert "`payouts.weekly` | `0 8 * * mon`" in hooks.family_reference("payouts")
    assert "`booking.created` -> `notifications.on_booking_created`" in hooks.family_reference(
        "notifications"
    )


def test_the_cli_reference_covers_every_command() -> None:
    reference = hooks.render("<!-- bgjobs:cli -->")
    commands = (
        "status", "dead-letters requeue", "dead-letters purge", "worker", "runs", "trigger", "scheduler",
        "db upgrade", "webhooks replay", "exports list", "cleanup run", "dev",
    )  # fmt: skip
    for command in (f"bgjobs {c}" for c in commands):
        assert f"### `{command}`" in reference, command


def test_every_argument_of_every_command_says_what_it_is() -> None:
    import argparse

    from bgjobs import cli

    silent: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                silent.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(cli._parser(), "bgjobs")
    assert silent == []


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = _build(ROOT, tmp_path / "site")
    assert built.returncode == 0, built.stderr
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "bgjobs dead-letters requeue" in cli
    assert "Unreleased" in (tmp_path / "site" / "changelog" / "index.html").read_text()


@pytest.mark.parametrize(
    ("page", "old", "new", "complaint"),
    [
        ("index.md", "Where to go next:", "[gone](nowhere.md)", "nowhere.md"),
        ("index.md", "Where to go next:", "[x](cli.md#no-such-part)", "no-such-part"),
        (
            "configuration.md",
            "BGJOBS_HEALTH__MAX_AGE_S",
            "BGJOBS_HEALTH__MAX_AGE",
            "BGJOBS_HEALTH__MAX_AGE_S",
        ),
    ],
)
def test_the_build_fails_on_a_broken_link_or_anchor_or_an_undocumented_setting(
    tmp_path: Path, page: str, old: str, new: str, complaint: str
) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    for name in ("mkdocs.yml", "CHANGELOG.md"):
        shutil.copy(ROOT / name, copy / name)
    for family in hooks.FAMILIES:  # the metrics tables read the families' source
        shutil.copytree(ROOT / "src" / "bgjobs" / family, copy / "src" / "bgjobs" / family)
    broken = copy / "docs" / page
    assert old in broken.read_text()
    broken.write_text(broken.read_text().replace(old, new))
    built = _build(copy, tmp_path / "site")
    assert built.returncode != 0
    assert complaint in built.stderr


def test_the_migrations_page_lists_every_revision() -> None:
    shipped = sorted(p.name[:4] for p in (ROOT / "src/bgjobs/migrations/versions").glob("[0-9]*.py"))
    listed = re.findall(r"^\| `(\d{4})` \|", (ROOT / "docs/migrations.md").read_text(), re.M)
    assert shipped and listed == shipped
