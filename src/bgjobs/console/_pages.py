"""The dashboard: server-rendered pages from the same operations as the API.

Each page is one Jinja2 template. ``static/console.js`` refreshes a page's ``<main>`` every few
seconds (the same URL with ``X-Bgjobs-Fragment: 1``) and turns each ``data-action`` button into a
POST to the API with the CSRF token; no build step, nothing loaded from elsewhere.
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import runtime
from ._actions import reader
from ._api import overview_data, schedule_data
from ._security import CSRF_COOKIE, Access, new_csrf_token

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(resources.files("bgjobs.console") / "templates"))
Reader = Annotated[Access, Depends(reader)]
PAGE = 50

#: (path, title) of each page, in the navigation's order.
NAV = (
    ("/", "Overview"), ("/queues", "Queues"), ("/actors", "Actors"), ("/dead-letters", "Dead letters"),
    ("/runs", "Runs"), ("/batches", "Batches"), ("/workflows", "Workflows"), ("/limits", "Limits"),
    ("/schedule", "Schedule"), ("/webhooks", "Webhooks"), ("/notifications", "Notifications"),
    ("/payouts", "Payouts"), ("/exports", "Exports"), ("/audit", "Audit"),
)  # fmt: skip

_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}  # fmt: skip


def _ago(moment: datetime | str | None) -> str:
    if moment is None:
        return "-"
    found = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    from ..clock import now

    seconds = (now() - found).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    text = (f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400
            else f"{seconds / 3600:.0f} h" if seconds < 172_800 else f"{seconds / 86400:.0f} d")  # fmt: skip
    return f"in {text}" if ahead else f"{text} ago"


def _sparkline(values: list[int], what: str) -> Markup:
    """A 30-minute series as a small inline SVG line (no script, so the page's CSP allows it)."""
    width, height = 120, 24
    top = max(values) if values and max(values) > 0 else 1
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - v / top * (height - 4):.1f}"
                      for i, v in enumerate(values))  # fmt: skip
    label = f"{what}: now {values[-1] if values else 0}, highest {max(values) if values else 0} in 30 minutes"
    # Safe: numbers we computed, and the label escaped.
    return Markup(  # noqa: S704
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title><polyline fill="none" '
        f'stroke="currentColor" stroke-width="1.5" points="{points}"/></svg>'
    )


def _chart(points: list[dict[str, Any]], what: str) -> Markup:
    """An actor's span as a small inline SVG: ``runs`` as bars with failures in red over them, or
    ``times`` as the p50 and p95 lines (no script, so the page's CSP allows it)."""
    width, height, n = 240, 36, max(len(points), 1)
    step = width / n
    if what == "runs":
        top = max([p["done"] for p in points] + [1])
        bars = []
        for i, p in enumerate(points):
            for value, cls in ((p["done"], "done"), (p["failed"], "failed")):
                if value:
                    h = max(value / top * (height - 2), 1)
                    bars.append(f'<rect class="{cls}" x="{i * step:.1f}" y="{height - h:.1f}" '
                                f'width="{max(step - 1, 1):.1f}" height="{h:.1f}"/>')  # fmt: skip
        done, failed = sum(p["done"] for p in points), sum(p["failed"] for p in points)
        label, body = f"{done} runs, {failed} failed; busiest point {top}", "".join(bars)
    else:
        top = max([p["p95_ms"] or 0 for p in points] + [1])
        lines = []
        for key in ("p50_ms", "p95_ms"):
            at = [((i + 0.5) * step, height - 2 - p[key] / top * (height - 4))
                  for i, p in enumerate(points) if p[key] is not None]  # fmt: skip
            dots = " ".join(f"{x:.1f},{y:.1f}" for x, y in at)
            lines.append(f'<polyline class="{key[:3]}" fill="none" stroke-width="1.5" points="{dots}"/>')
            lines += [f'<circle class="{key[:3]}" cx="{x:.1f}" cy="{y:.1f}" r="2"/>' for x, y in at]
        label, body = f"run time p50 and p95; highest p95 {top} ms", "".join(lines)
    # Safe: numbers we computed, and the label escaped.
    return Markup(  # noqa: S704
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title><rect class="frame" width="{width}" '
        f'height="{height}"/>{body}</svg>'
    )


templates.env.filters["ago"] = _ago
templates.env.filters["chart"] = _chart
templates.env.filters["sparkline"] = _sparkline
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str, sort_keys=True)


def base_of(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def render(request: Request, name: str, access: Access | None, title: str, **context: Any) -> Response:
    base = base_of(request)
    csrf = request.cookies.get(CSRF_COOKIE)
    settings = runtime.current().settings.console
    page = templates.TemplateResponse(request, name, {
        "base": base, "title": title, "nav": NAV, "who": access.who if access else None,
        "fragment": request.headers.get("x-bgjobs-fragment") == "1", "read_only": settings.read_only,
        "path": request.url.path.removeprefix(base) or "/", "query": dict(request.query_params), **context,
    })  # fmt: skip
    page.headers.update(_HEADERS)
    if not csrf:
        page.set_cookie(CSRF_COOKIE, new_csrf_token(), path=base or "/", samesite="strict", httponly=False,
                        secure=request.url.scheme == "https")  # fmt: skip
    return page


def unavailable_page(request: Request, status: int, reason: str) -> Response:
    """A page that could not be shown, as a page rather than the API's JSON: its data could not be
    read (503: Redis or the database down; its live refresh marks it stale until it answers), or
    what it was asked for does not exist (404) or cannot be read (422, an unknown filter)."""
    title = {404: "Not found", 422: "Not understood"}.get(status, "Unavailable")
    page = render(request, "unavailable.html", None, title, reason=reason, stale=status == 503, status=status)
    page.status_code = status
    return page


def refused_page(request: Request, exc: StarletteHTTPException) -> Response:
    page = render(request, "refused.html", None, "Sign in", reason=exc.detail)
    page.status_code = exc.status_code
    page.headers.update(exc.headers or {})
    return page


def _pages(query: dict[str, Any], offset: int, more: bool) -> dict[str, str | None]:
    """Links to the previous and next page, keeping the filters."""
    keep = {k: v for k, v in query.items() if v not in (None, "") and k != "offset"}
    before = urlencode({**keep, "offset": max(offset - PAGE, 0)}) if offset > 0 else None
    after = urlencode({**keep, "offset": offset + PAGE}) if more else None
    return {"previous": f"?{before}" if before else None, "next": f"?{after}" if after else None}


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, access: Reader) -> Response:
    return render(request, "overview.html", access, "Overview", data=overview_data())


@router.get("/queues", response_class=HTMLResponse)
def queues(request: Request, access: Reader) -> Response:
    from ._queues import queue_list

    return render(request, "queues.html", access, "Queues", queues=queue_list())


@router.get("/queues/{name}", response_class=HTMLResponse)
def queue(
    request: Request, name: str, access: Reader, state: str = "waiting",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:  # fmt: skip
    """One queue's jobs in one state, with their (masked) arguments, and per-job actions."""
    from ..queued import STATES
    from ._queues import queue_jobs

    found = queue_jobs(name, access, state=state, limit=PAGE, offset=offset)
    pages = _pages(dict(request.query_params), offset, found["more"])
    return render(request, "queue.html", access, f"Queue {name}", queue=name, state=state, states=STATES,
                  jobs=found["items"], pages=pages)  # fmt: skip


@router.get("/jobs/{message_id}", response_class=HTMLResponse)
def job(request: Request, message_id: str, access: Reader) -> Response:
    """Why a job is not running yet, or what became of it (``bgjobs explain``), with Cancel."""
    from ._queues import explain_job

    found = explain_job(message_id, access)
    return render(request, "job.html", access, "Job", message_id=message_id, explanation=found["explanation"])


@router.get("/actors", response_class=HTMLResponse)
def actors(request: Request, access: Reader, span: str = "hour") -> Response:
    """Each actor's throughput, failures and run times over the last hour or day."""
    from ._queues import actors as actor_list

    found = actor_list(access, span=span)["items"]
    return render(request, "actors.html", access, "Actors", span=span, actors=found)


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters(
    request: Request, access: Reader, queue: str | None = None, actor: str | None = None,
    kind: str | None = None, reason: str | None = None, since: str | None = None,
    before: str | None = None, offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:  # fmt: skip
    """Empty fields filter nothing; a "since" the page cannot read is said on the page (422), with
    nothing listed, rather than as a raw error or a list that ignores it."""
    from ..deadletters import dead_letters as find
    from ..errors import InvalidPayload
    from ..moments import parse_moment
    from ._api import _letter

    try:
        moment, until = parse_moment(since), parse_moment(before)
    except InvalidPayload as exc:
        page = render(request, "dead_letters.html", access, "Dead letters", letters=[], match={},
                      pages=_pages({}, 0, False), error=str(exc), kinds=KINDS)  # fmt: skip
        page.status_code = 422
        return page
    found = find(queue=queue or None, actor=actor or None, kind=kind or None, reason=reason or None,
                 since=moment, before=until, limit=PAGE + 1, offset=offset)  # fmt: skip
    match = {k: v for k, v in {"queue": queue, "actor": actor, "kind": kind, "reason": reason,
                               "since": moment.isoformat() if moment else None}.items() if v}  # fmt: skip
    pages = _pages(dict(request.query_params), offset, len(found) > PAGE)
    letters = [_letter(d) for d in found[:PAGE]]
    more = None
    if found.more_before is not None:  # a reason search stopped at its budget: go on from there
        query = {**request.query_params, "before": found.more_before.isoformat(), "offset": "0"}
        more = "?" + urlencode(query)
    return render(request, "dead_letters.html", access, "Dead letters", letters=letters, match=match,
                  pages=pages, kinds=KINDS, more_before=more)  # fmt: skip


#: The kinds of dead letter, for the page's filter.
KINDS = ("invalid", "permanent", "configuration", "exhausted", "poison", "undecodable", "unknown_actor",
         "unknown")  # fmt: skip


@router.get("/dead-letters/{letter_id}", response_class=HTMLResponse)
def dead_letter(request: Request, letter_id: str, access: Reader) -> Response:
    from ._api import show_dead_letter

    return render(
        request, "dead_letter.html", access, "Dead letter", letter=show_dead_letter(letter_id, access)
    )


@router.get("/runs", response_class=HTMLResponse)
def runs(
    request: Request, access: Reader, job: str | None = None, outcome: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:  # fmt: skip
    from .. import runs as run_log
    from ._api import _run

    found = run_log.recent(job=job or None, outcome=outcome or None, limit=PAGE + 1, offset=offset)
    return render(request, "runs.html", access, "Runs", runs=[_run(r) for r in found[:PAGE]],
                  pages=_pages(dict(request.query_params), offset, len(found) > PAGE))  # fmt: skip


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run(request: Request, run_id: str, access: Reader) -> Response:
    from ._api import show_run

    return render(request, "run.html", access, "Run", run=show_run(run_id, access))


@router.get("/schedule", response_class=HTMLResponse)
def schedule(request: Request, access: Reader) -> Response:
    from ._api import jobs

    return render(request, "schedule.html", access, "Schedule", data=schedule_data(),
                  jobs=jobs(access)["items"])  # fmt: skip


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks(
    request: Request, access: Reader, message: str | None = None, endpoint_id: str | None = None,
    event_type: str | None = None, status: str | None = None, since: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:  # fmt: skip
    """Endpoints; the messages, filtered; and, with ``message``, one message's attempts."""
    from ._families import attempts, endpoints, messages

    found = attempts(message, access)["items"] if message else None
    listed = messages(access, endpoint_id=endpoint_id, event_type=event_type, status=status, since=since,
                      limit=PAGE, offset=offset)  # fmt: skip
    return render(request, "webhooks.html", access, "Webhooks", endpoints=endpoints(access)["items"],
                  message=message, attempts=found, messages=listed["items"],
                  pages=_pages(dict(request.query_params), offset, listed["more"]))  # fmt: skip


@router.get("/notifications", response_class=HTMLResponse)
def notifications(
    request: Request, access: Reader, key: str | None = None, user_id: str | None = None,
    template: str | None = None, status: str | None = None, offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:  # fmt: skip
    from ..notifications import deliveries

    found = deliveries(key=key or None, user_id=user_id or None, template=template or None,
                       status=status or None, limit=PAGE + 1, offset=offset)  # fmt: skip
    return render(request, "notifications.html", access, "Notifications", rows=found[:PAGE],
                  pages=_pages(dict(request.query_params), offset, len(found) > PAGE))  # fmt: skip


@router.get("/payouts", response_class=HTMLResponse)
def payouts(
    request: Request, access: Reader, status: str | None = None, vendor_id: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:  # fmt: skip
    from .. import runs as run_log
    from ..payouts import payouts as payout_list

    found = payout_list(status=status or None, vendor_id=vendor_id or None, limit=PAGE + 1, offset=offset)
    recent = [r for job in ("payouts.weekly", "payouts.monthly") for r in run_log.recent(job=job, limit=5)]
    return render(request, "payouts.html", access, "Payouts", payouts=found[:PAGE],
                  runs=sorted(recent, key=lambda r: r.started_at, reverse=True)[:8],
                  pages=_pages(dict(request.query_params), offset, len(found) > PAGE))  # fmt: skip


@router.get("/exports", response_class=HTMLResponse)
def exports(request: Request, access: Reader, dataset: str | None = None) -> Response:
    from ..exports import exports as export_list

    return render(
        request, "exports.html", access, "Exports", exports=export_list(dataset=dataset or None, limit=PAGE)
    )


@router.get("/audit", response_class=HTMLResponse)
def audit(
    request: Request, access: Reader, action: str | None = None, who: str | None = None,
    resource: str | None = None, since: str | None = None, until: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:  # fmt: skip
    from ._api import audit as audit_log

    found = audit_log(access, action=action, who=who, resource=resource, since=since, until=until, limit=PAGE,
                      offset=offset)  # fmt: skip
    return render(request, "audit.html", access, "Audit log", entries=found["items"],
                  pages=_pages(dict(request.query_params), offset, found["more"]))  # fmt: skip
