"""The configuration reference lists every setting, and nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from bgjobs.settings import DEFAULT_SCHEDULE, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def variables(model: type[BaseModel] = Settings, prefix: str = "BGJOBS_", value: object = None) -> set[str]:
    names: set[str] = set()
    instance = value if value is not None else Settings()
    for field in model.model_fields:
        default = getattr(instance, field)
        if isinstance(default, BaseModel):
            names |= variables(type(default), f"{prefix}{field.upper()}__", default)
        else:
            names.add(f"{prefix}{field.upper()}")
    return names


def test_every_setting_is_documented() -> None:
    lines = DOC.read_text().splitlines()
    missing = []
    for name in sorted(variables()):
        section, _, leaf = name.rpartition("__")
        documented = any(name in line for line in lines) or any(
            f"{section}__" in line and f"__{leaf}" in line for line in lines if section
        )
        if not documented:
            missing.append(name)
    assert missing == []


def test_the_reference_names_no_setting_that_does_not_exist() -> None:
    known = variables()
    mentioned = set(re.findall(r"BGJOBS_[A-Z_]+[A-Z]", DOC.read_text()))
    sections = {n.rpartition("__")[0] for n in known if "__" in n}
    unknown = {
        m for m in mentioned if m not in known and m.rstrip("_") not in sections and not m.endswith("__")
    }
    # Dict settings: per-actor overrides are a pattern; schedule entries must be bgjobs's jobs.
    unknown = {u for u in unknown if not u.startswith("BGJOBS_ACTORS__")}
    scheduled = {f"BGJOBS_SCHEDULE__{k.upper()}" for k in DEFAULT_SCHEDULE}
    assert unknown - scheduled == set()
    assert scheduled <= mentioned
