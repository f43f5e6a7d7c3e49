"""MkDocs hooks: the parts of the docs that code already knows are generated from it.

* ``<!-- bgjobs:cli -->``: the ``bgjobs`` command's help, every subcommand, from its parser.
* ``<!-- bgjobs:changelog -->``: CHANGELOG.md.
* ``<!-- bgjobs:family NAME -->``: a family's settings (its section of configuration.md), cron
  entries (from its declared jobs), events (declared and subscribed) and metrics (from its source).

The build fails (``PluginError``) when configuration.md misses a setting that exists in code, or
names one that does not; ``mkdocs build --strict`` fails on broken links and anchors.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = ROOT / "docs" / "configuration.md"
FAMILIES = ("notifications", "payouts", "webhooks", "exports", "cleanup")
_MARK = re.compile(r"<!-- bgjobs:(\w+)(?: (\w+))? -->")


# Settings <-> configuration.md


def variables(model: Any = None, prefix: str = "BGJOBS_", value: Any = None) -> set[str]:
    """Every settings variable, nested sections included."""
    from pydantic import BaseModel

    from bgjobs.settings import Settings

    model = model or Settings
    instance = value if value is not None else Settings()
    names: set[str] = set()
    for field in model.model_fields:
        default = getattr(instance, field)
        if isinstance(default, BaseModel):
            names |= variables(type(default), f"{prefix}{field.upper()}__", default)
        else:
            names.add(f"{prefix}{field.upper()}")
    return names


def undocumented(text: str | None = None) -> list[str]:
    """Settings in code that configuration.md does not name."""
    lines = (text if text is not None else CONFIGURATION.read_text()).splitlines()
    missing = []
    for name in sorted(variables()):
        section, _, leaf = name.rpartition("__")
        documented = any(name in line for line in lines) or any(
            f"{section}__" in line and f"__{leaf}" in line for line in lines if section
        )
        if not documented:
            missing.append(name)
    return missing


def unknown(text: str | None = None) -> list[str]:
    """Variables configuration.md names that no setting has."""
    from bgjobs.jobs import registered_jobs
    from bgjobs.settings import schedule_key

    _load_everything()
    known = variables()
    text = text if text is not None else CONFIGURATION.read_text()
    mentioned = set(re.findall(r"BGJOBS_[A-Z_]+[A-Z]", text))
    sections = {n.rpartition("__")[0] for n in known if "__" in n}
    scheduled = {f"BGJOBS_SCHEDULE__{schedule_key(k).upper()}" for k, j in registered_jobs().items()
                 if j.schedule and j.fn.__module__.startswith("bgjobs.")}
    return sorted(
        m for m in mentioned
        if m not in known and m.rstrip("_") not in sections and not m.endswith("__")
        and not m.startswith("BGJOBS_ACTORS__") and m not in scheduled
    )  # fmt: skip


# Generated sections


def _cli() -> str:
    from bgjobs.cli import _parser

    out: list[str] = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        out.append(f"### `{' '.join(words)}`\n\n```text\n{parser.format_help().strip()}\n```\n")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*words, name])

    walk(_parser(), ["bgjobs"])
    return "\n".join(out)


def _changelog() -> str:
    text = (ROOT / "CHANGELOG.md").read_text()
    return re.sub(r"\A# [^\n]*\n", "", text).replace("\n### ", "\n#### ").replace("\n## ", "\n### ")


def _settings_section(family: str) -> str:
    text = CONFIGURATION.read_text()
    match = re.search(rf"^## [^\n]*`BGJOBS_{family.upper()}__\*`[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if match is None:
        raise ValueError(f"configuration.md has no section for BGJOBS_{family.upper()}__*")
    return match.group(1).strip()


def _load_everything() -> None:
    # The families' modules, not bgjobs.actors: building the docs boots no worker and needs no database.
    from bgjobs.worker import FAMILY_MODULES

    for module in (*(f"bgjobs.{family}" for family in FAMILIES), *FAMILY_MODULES):
        importlib.import_module(module)


def _cron(family: str) -> str:
    from bgjobs.jobs import registered_jobs
    from bgjobs.settings import schedule_key

    rows = ["| Job | Default schedule | Setting | What it does |", "|---|---|---|---|"]
    for name, spec in sorted(registered_jobs().items()):
        if name.split(".")[0] != family:
            continue
        key = schedule_key(name)
        schedule = spec.schedule or "not scheduled"
        doc = (spec.fn.__doc__ or "").strip().splitlines()[0] if spec.fn.__doc__ else ""
        rows.append(f"| `{name}` | `{schedule}` | `BGJOBS_SCHEDULE__{key.upper()}` | {doc} |")
    if len(rows) == 2:
        return "This family has no scheduled job."
    hint = "Run one now with `bgjobs trigger JOB [--name value]`; an empty setting disables it."
    return "\n".join(rows) + "\n\n" + hint


def _events(family: str) -> str:
    from bgjobs import events

    mine = f"bgjobs.{family}."
    declared = sorted(n for n, m in events._models.items() if m.__module__.startswith(mine))
    subscribed = sorted(
        {(p, s.name) for p, s, _ in events._subscriptions if s.fn.__module__.startswith(mine)}
    )
    lines = []
    if declared:
        lines.append("Published by this family: " + ", ".join(f"`{n}`" for n in declared) + ".")
    if subscribed:
        lines.append("Subscriptions: " + ", ".join(f"`{p}` -> `{a}`" for p, a in subscribed) + ".")
    return "\n\n".join(lines) or "This family publishes and subscribes to no event."


def _metrics(family: str) -> str:
    package = ROOT / "src" / "bgjobs" / family
    found: dict[str, str] = {}
    for path in sorted(package.glob("*.py")):
        text = path.read_text()
        for name, doc in re.findall(r'(?:counter|gauge)\(\s*"(bgjobs_\w+)",\s*"([^"]+)"', text):
            found[name] = doc
        for name, doc in re.findall(r'"(bgjobs_\w+_total)":\s*"([^"]+)"', text):
            found[name] = doc
    rows = ["| Series | Meaning |", "|---|---|"]
    rows.append(f'| `bgjobs_jobs_total{{family="{family}"}}` | jobs of this family by actor and outcome |')
    rows += [f"| `{name}` | {doc} |" for name, doc in sorted(found.items())]
    gauges = "`bgjobs_queue_depth`, `bgjobs_queue_delayed`, `bgjobs_queue_in_flight`, `bgjobs_dead_letters`"
    return "\n".join(rows) + f'\n\nQueue gauges ({gauges}) carry `queue="{family}"`.'


def family_reference(family: str) -> str:
    _load_everything()
    return "\n\n".join([
        f"### Settings\n\n{_settings_section(family)}", f"### Cron entries\n\n{_cron(family)}",
        f"### Events\n\n{_events(family)}", f"### Metrics\n\n{_metrics(family)}",
    ])  # fmt: skip


def render(markdown: str) -> str:
    def replace(match: re.Match[str]) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "cli":
            return _cli()
        if kind == "changelog":
            return _changelog()
        if kind == "family" and arg in FAMILIES:
            return family_reference(arg)
        raise ValueError(f"unknown docs marker {match.group(0)}")

    return _MARK.sub(replace, markdown)


# MkDocs entry points


def on_pre_build(config: Any) -> None:
    from mkdocs.exceptions import PluginError

    problems = [f"configuration.md does not document {n}" for n in undocumented()]
    problems += [f"configuration.md names {n}, which is no setting" for n in unknown()]
    if problems:
        raise PluginError("; ".join(problems))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    from mkdocs.exceptions import PluginError

    try:
        return render(markdown)
    except ValueError as exc:
        raise PluginError(f"{page.file.src_path}: {exc}") from exc
