"""The exports family's notifications: their variables, registered with their files beside them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..notifications import Category, Channel, Template, TemplateVariables, register_template

__all__ = ["ExportFailed", "ExportReady"]

#: ``<locale>/<name>/<part>``, searched after the host's ``BGJOBS_NOTIFICATIONS__TEMPLATES_DIR``.
DIRECTORY = Path(__file__).with_name("templates")


class ExportReady(TemplateVariables):
    export_id: str
    dataset: str
    period: str | None = None
    fmt: str
    rows: int = Field(ge=0)
    size: int = Field(ge=0)
    url: str


class ExportFailed(TemplateVariables):
    export_id: str
    dataset: str
    period: str | None = None
    error: str


for _template in (
    Template(
        "export_ready",
        Category.TRANSACTIONAL,
        (Channel.EMAIL,),
        ExportReady,
        urgent=True,
        directory=DIRECTORY,
    ),
    Template(
        "export_failed",
        Category.TRANSACTIONAL,
        (Channel.EMAIL,),
        ExportFailed,
        urgent=True,
        directory=DIRECTORY,
    ),
):
    register_template(_template)  # fmt: skip
