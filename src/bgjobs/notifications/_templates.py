"""Templates: typed variables, one file per part, host overrides and locale fallback.

A template is a directory ``<locale>/<name>/`` holding the parts its channels need:
``subject.txt``, ``text.txt`` and optionally ``html.html`` (email), ``sms.txt`` (SMS),
``push_title.txt`` and ``push_body.txt`` (push). Each part is looked up in the host's
directory (``BGJOBS_NOTIFICATIONS__TEMPLATES_DIR``) and then in bgjobs's, for each locale
of the chain ``pt-BR`` -> ``pt`` -> default, so a host can override one SMS wording
without copying the rest. Rendering is Jinja2 with undefined variables as errors and
HTML parts autoescaped.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import InvalidPayload
from ..money import Money
from ._models import Category, Channel, Recipient

__all__ = [
    "BUNDLED_DIR",
    "Content",
    "Template",
    "TemplateVariables",
    "get_template",
    "locale_chain",
    "register_template",
    "registered_templates",
    "render",
]

BUNDLED_DIR = Path(__file__).with_name("templates")

#: The parts each channel renders; a part missing for every locale is an error, except html.
PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.EMAIL: ("subject.txt", "text.txt", "html.html"),
    Channel.SMS: ("sms.txt",),
    Channel.PUSH: ("push_title.txt", "push_body.txt"),
}
_OPTIONAL = {"html.html"}


@dataclass(frozen=True)
class Template:
    """A template's contract: its variables, why it is sent, and where it may go."""

    name: str
    category: Category
    channels: tuple[Channel, ...]
    #: A pydantic model of the variables; None accepts any mapping (undefined names still fail).
    variables: type[BaseModel] | None = None
    #: Urgent SMS and push ignore quiet hours.
    urgent: bool = False
    #: Where the family that owns the template keeps its files (``<locale>/<name>/<part>``);
    #: notifications' own directory by default. The host's directory is searched first either way.
    directory: Path | None = None

    def check(self, context: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
        """The variables, validated: a missing or wrong one raises, naming the template and field."""
        if self.variables is None:
            return dict(context.model_dump() if isinstance(context, BaseModel) else context)
        try:
            if isinstance(context, self.variables):
                checked = context
            else:
                raw = context.model_dump() if isinstance(context, BaseModel) else context
                checked = self.variables.model_validate(raw)
        except ValidationError as exc:
            raise InvalidPayload.from_validation_error(f"template {self.name}", exc) from None
        return {name: getattr(checked, name) for name in type(checked).model_fields}


@dataclass(frozen=True)
class Content:
    """One channel's rendered parts."""

    subject: str = ""
    text: str = ""
    html: str | None = None


_lock = threading.Lock()
_templates: dict[str, Template] = {}


def register_template(template: Template) -> Template:
    """Add a template (or replace one of the same name, bundled ones included)."""
    if not template.channels:
        raise ValueError(f"template {template.name} has no channels")
    with _lock:
        _templates[template.name] = template
    return template


def registered_templates() -> dict[str, Template]:
    with _lock:
        return dict(_templates)


def get_template(name: str) -> Template:
    """Raises: InvalidPayload naming the known templates when ``name`` is not one."""
    with _lock:
        found = _templates.get(name)
    if found is None:
        raise InvalidPayload(
            f"unknown template {name!r}; known templates: {', '.join(sorted(registered_templates()))}"
        )
    return found


def locale_chain(locale: str | None, default: str) -> list[str]:
    """``pt_BR`` -> ``["pt-BR", "pt", "en"]``: most specific first, the default last."""
    chain: list[str] = []
    if locale:
        parts = locale.replace("_", "-").split("-")
        parts = [parts[0].lower(), *parts[1:]]
        for n in range(len(parts), 0, -1):
            chain.append("-".join(parts[:n]))
    if default not in chain:
        chain.append(default)
    return chain


@functools.cache
def _babel_locale(locale: str) -> Any:
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(locale.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return None


@jinja2.pass_context
def _money(ctx: Any, value: Money) -> str:
    """An amount as the recipient's locale writes it (CLDR): ``$500.00`` in en, ``R$ 1.234,50`` in
    pt-BR, ``1.234,50 €`` in de; the currency's own number of decimals."""
    from babel.numbers import format_currency

    for name in ctx.get("locales") or ():
        found = _babel_locale(name)
        if found is not None:
            return str(format_currency(value.amount, value.currency, locale=found))
    return f"{value.amount:,} {value.currency}"


@jinja2.pass_context
def _local(ctx: Any, moment: datetime, fmt: str = "%a %d %b %Y, %H:%M %Z") -> str:
    """An aware datetime shown in the recipient's time zone."""
    zone = ctx.get("timezone") or "UTC"
    return moment.astimezone(ZoneInfo(zone)).strftime(fmt)


@functools.cache
def _environment(host_dir: str | None, directory: Path) -> jinja2.Environment:
    roots = [*([host_dir] if host_dir else []), str(directory)]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(roots),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    env.filters["local"] = _local
    return env


def render(
    template: Template,
    channel: Channel,
    variables: Mapping[str, Any],
    recipient: Recipient,
    *,
    host_dir: str | None,
    default_locale: str,
) -> Content:
    """Render ``template`` for one channel in the recipient's locale.

    Raises:
        InvalidPayload: a part is missing in every locale, or uses a variable not given.
    """
    env = _environment(host_dir, template.directory or BUNDLED_DIR)
    chain = locale_chain(recipient.locale, default_locale)
    context = {**variables, "recipient": recipient, "timezone": recipient.timezone, "locales": chain}
    parts: dict[str, str | None] = {}
    for part in PARTS[channel]:
        names = [f"{locale}/{template.name}/{part}" for locale in chain]
        try:
            parts[part] = env.select_template(names).render(context).strip()
        except jinja2.TemplatesNotFound:
            if part in _OPTIONAL:
                parts[part] = None
                continue
            raise InvalidPayload(
                f"template {template.name} has no {part} for {channel} (looked for {', '.join(names)})"
            ) from None
        except jinja2.UndefinedError as exc:
            raise InvalidPayload(f"template {template.name} ({part}): {exc.message}") from None
    if channel is Channel.EMAIL:
        return Content(
            subject=parts["subject.txt"] or "", text=parts["text.txt"] or "", html=parts["html.html"]
        )
    if channel is Channel.SMS:
        return Content(text=parts["sms.txt"] or "")
    return Content(subject=parts["push_title.txt"] or "", text=parts["push_body.txt"] or "")


class TemplateVariables(BaseModel):
    """Base of a template's variables: frozen, and names the template does not use are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")
