"""Every change the portal makes, in one place: checked (CSRF, origin, rate), done and audited.

Pages and the API both call :func:`act`, so a change has one code path whichever surface asked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import Request

from ..webhooks import _endpoints as endpoints
from . import _owned as owned
from ._access import audited, changing, needs
from ._tokens import Token

__all__ = ["ENDPOINT_ACTIONS", "act", "event_types"]


def _replayed(result: Any) -> dict[str, Any]:
    return {"queued": len(result.queued), "skipped": dict(result.skipped)}


def _add(
    token: Token, _: str | None, *, url: str, event_types: list[str], description: str | None = None
) -> dict[str, Any]:
    created = owned.add(token, url=url, event_types=event_types, description=description)
    return {**owned.shown(created), "secret": created.secret.get_secret_value()}


def _edit(
    token: Token,
    endpoint_id: str,
    *,
    url: str | None = None,
    event_types: list[str] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    return owned.shown(
        owned.edit(token, endpoint_id, url=url, event_types=event_types, description=description)
    )


def _disable(token: Token, endpoint_id: str) -> dict[str, Any]:
    owned.endpoint_of(token, endpoint_id)
    return owned.shown(endpoints.disable_endpoint(endpoint_id, reason="disabled by its owner in the portal"))


def _enable(token: Token, endpoint_id: str) -> dict[str, Any]:
    owned.endpoint_of(token, endpoint_id)
    return owned.shown(endpoints.enable_endpoint(endpoint_id))


def _delete(token: Token, endpoint_id: str) -> dict[str, Any]:
    owned.endpoint_of(token, endpoint_id)
    endpoints.delete_endpoint(endpoint_id)
    return {"deleted": endpoint_id}


def _test(token: Token, endpoint_id: str) -> dict[str, Any]:
    return {"message_id": owned.send_test(token, endpoint_id)}


def _rotate(token: Token, endpoint_id: str) -> dict[str, Any]:
    return {
        "secret": owned.rotate(token, endpoint_id),
        "previous_valid_hours": int(owned.GRACE.total_seconds() // 3600),
    }


def _replay(token: Token, endpoint_id: str, *, message_id: str) -> dict[str, Any]:
    return _replayed(owned.replay(token, endpoint_id, message_id))


def _recover(token: Token, endpoint_id: str, *, since: datetime) -> dict[str, Any]:
    return _replayed(owned.recover(token, endpoint_id, since))


#: The endpoint actions by name; each takes the token, the endpoint's id and its own fields.
ENDPOINT_ACTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "add": _add,
    "edit": _edit,
    "disable": _disable,
    "enable": _enable,
    "delete": _delete,
    "test": _test,
    "rotate": _rotate,
    "replay": _replay,
    "recover": _recover,
}

#: What the audit log keeps of an action's fields and result (never a secret).
_KEPT = ("url", "event_types", "message_id", "since", "queued")


def act(
    request: Request, token: Token, action: str, endpoint_id: str | None, csrf: str | None, **fields: Any
) -> dict[str, Any]:
    """Run one endpoint action for the token's owner: refused (and audited) if the token lacks the
    webhooks scope, the request is cross-site or without its CSRF field, or the owner is over the
    rate; audited with its result either way."""
    needs(token, "webhooks")
    resource = f"endpoint:{endpoint_id or 'new'}"
    changing(request, token, f"portal.{action}", resource, csrf)
    try:
        result = ENDPOINT_ACTIONS[action](token, endpoint_id, **fields)
    except Exception as exc:
        audited(token, f"portal.{action}", resource, str(exc)[:500], result="failed")
        raise
    kept = {k: v for k, v in {**fields, **result}.items() if k in _KEPT}
    audited(token, f"portal.{action}", f"endpoint:{result.get('id', endpoint_id)}", str(kept)[:2000])
    return result


def event_types(values: list[str]) -> list[str]:
    """Subscriptions from a form: checkboxes, or one text field of comma-separated types."""
    return [t.strip() for v in values for t in v.split(",") if t.strip()]
