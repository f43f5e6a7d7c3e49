"""A change to the public API that can break a user's code says so in CHANGELOG.md.

``tests/fixtures/public_api.json`` records the API of the last release (refresh it when releasing:
``python -m tests.support.public_api > tests/fixtures/public_api.json``). Adding names, or optional
parameters, breaks nobody; a name that goes, or a parameter that goes, moves, loses its default or
is newly required, must be named under "### Breaking changes" in the unreleased section.
"""

from __future__ import annotations

import json
import re

from tests.support import public_api
from tests.support.workers import ROOT

RECORD = ROOT / "tests" / "fixtures" / "public_api.json"


def _sections() -> dict[str, str]:
    """Each version's section of CHANGELOG.md, by its heading."""
    text = (ROOT / "CHANGELOG.md").read_text()
    parts = re.split(r"^## (\[[^\]]+\].*)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _breaking(section: str) -> str:
    found = re.search(r"^### Breaking changes\n(.*?)(?=^### |\Z)", section, re.M | re.S)
    return found.group(1) if found else ""


def test_every_incompatible_change_since_the_release_is_named_under_breaking_changes() -> None:
    before = json.loads(RECORD.read_text())
    now = public_api.collect()
    broken = {name: why for name, params in before.items()
              if (why := public_api.incompatible(params, now.get(name, "missing")))}  # fmt: skip
    unreleased = next(body for heading, body in _sections().items() if heading.startswith("[Unreleased]"))
    told = _breaking(unreleased)
    untold = {name: why for name, why in broken.items() if name.rsplit(".", 1)[-1] not in told}
    assert untold == {}, (
        "name these under ### Breaking changes in CHANGELOG.md's unreleased section, or keep them "
        f"compatible: {untold}"
    )


def test_every_version_of_the_changelog_keeps_a_breaking_changes_heading() -> None:
    assert all("### Breaking changes" in body for body in _sections().values()), [
        heading for heading, body in _sections().items() if "### Breaking changes" not in body
    ]


def test_the_check_notices_a_removed_name_and_a_newly_required_parameter() -> None:
    assert public_api.incompatible([["name", "POSITIONAL_OR_KEYWORD", False]], "missing") == "removed"
    assert public_api.incompatible(
        [["name", "POSITIONAL_OR_KEYWORD", False]],
        [["name", "POSITIONAL_OR_KEYWORD", False], ["period", "KEYWORD_ONLY", False]],
    ) == "new required parameter 'period'"
    assert public_api.incompatible(
        [["name", "POSITIONAL_OR_KEYWORD", False]],
        [["name", "POSITIONAL_OR_KEYWORD", False], ["arguments", "KEYWORD_ONLY", True]],
    ) is None  # an optional parameter added breaks nobody
    assert public_api.incompatible([["when", "KEYWORD_ONLY", True]], [["when", "KEYWORD_ONLY", False]]) == (
        "parameter 'when' lost its default"
    )
