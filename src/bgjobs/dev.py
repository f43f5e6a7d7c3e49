"""``bgjobs dev``: an embedded Redis, SQLite in a temp dir, workers, the scheduler, and sample work
through every family.

Everything it starts listens on 127.0.0.1 and is stopped when it exits (Ctrl-C included).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .embedded import RedisServer, free_port
from .exposition import scrape
from .money import Money
from .stopping import stop_on_signals

__all__ = ["run"]


def _env(redis_url: str, workdir: Path, metrics_port: int) -> dict[str, str]:
    return {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{workdir / 'bgjobs.db'}",
        "BGJOBS_JOBS": '["bgjobs.demo"]',
        "BGJOBS_MAILER": "console",
        "BGJOBS_SMS": "console",
        "BGJOBS_PUSH": "console",
        "BGJOBS_PAYMENT": "console",
        "BGJOBS_STORAGE": "localfs",
        "BGJOBS_LOCALFS__ROOT": str(workdir / "storage"),
        "BGJOBS_PAYOUTS__VENDOR_CONTACT": "bgjobs.demo:vendor_contact",
        "BGJOBS_PAYOUTS__ALERT_EMAIL": "ops@example.com",
        "BGJOBS_SCHEDULE__DEMO_REPORT": "@every 5s",
        # The demo's webhook endpoint is a plain-HTTP server on loopback, which the guard refuses.
        "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false",
        "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]',
        "dramatiq_prom_port": str(metrics_port),
        "dramatiq_prom_db": str(workdir / "prometheus"),
    }


class _Receiver:
    """A merchant's webhook endpoint on loopback: verifies each request's signature, 401 if it fails."""

    def __init__(self) -> None:
        self.secret = ""
        received = self.received = []  # type: list[tuple[str, str, bool]]
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from .webhooks import InvalidSignature, verify

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    kind, ok = str(verify(body, dict(self.headers.items()), receiver.secret)["type"]), True
                except InvalidSignature:
                    kind, ok = "?", False
                received.append((kind, self.headers.get("webhook-id", "?"), ok))
                self.send_response(204 if ok else 401)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait(predicate: Callable[[], object], timeout: float = 60, *, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def _last_run(job: str, trigger: str | None = None) -> Any:
    from . import runs

    finished = (r for r in runs.recent(job=job) if r.outcome != "running")
    return next((r for r in finished if trigger is None or r.trigger == trigger), None)


def _old_runs(n: int) -> None:
    """Rows from four months ago, for the cleanup family's bundled retention policy to delete."""
    from . import db, runs

    long_ago = datetime.now(UTC) - timedelta(days=120)
    with db.session() as s:
        for i in range(n):
            s.add(runs.Run(job="demo.old", trigger="manual", started_at=long_ago, finished_at=long_ago,
                           outcome="succeeded", counts=json.dumps({"i": i})))  # fmt: skip


def _receipts() -> list[Any]:
    from . import payouts

    return payouts.receipts()


class _Summary:
    def __init__(self) -> None:
        self.ok = True

    def line(self, done: bool, text: str) -> None:
        self.ok = self.ok and done
        print(f"  {'ok ' if done else 'NOT'} {text}")


def _drive(workdir: Path, metrics_port: int) -> bool:
    """Send a realistic sample through every family, wait for it, print what happened; True if all done."""
    from . import db, demo, events, exports, families, notifications, outbox, payouts, webhooks

    receiver = _Receiver()
    endpoint = webhooks.add_endpoint(receiver.url, event_types=["booking.*"], description="bgjobs dev")
    receiver.secret = endpoint.secret.get_secret_value()
    _old_runs(3)

    for user_id in range(1, 5):
        demo.demo_welcome.send({"user_id": user_id, "email": f"user{user_id}@example.com"})
    demo.demo_welcome.send({"user_id": 1, "email": "user1@example.com"})  # a duplicate: no second email
    events.publish("user.signed_up", {"user_id": 5, "email": "user5@example.com"})
    booking = {
        "booking_id": "B1", "trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"},
        "recipient": {"user_id": "u1", "email": "ann@example.com", "phone": "+447700900123",
                      "push_tokens": ["demo-device-token"]},
    }  # fmt: skip
    events.publish("booking.created", booking)
    last_week = datetime.now(UTC) - timedelta(days=8)
    with db.session() as s:  # earnings born in the host's transaction go through the outbox
        for vendor, gross in (("v1", "600.00"), ("v2", "300.00"), ("v3", "40.00")):
            outbox.defer(s, payouts.record_entry, payouts.LedgerWrite(
                kind="earning", vendor_id=vendor, amount=Decimal(gross), currency="USD",
                source_id=f"booking:{vendor}", occurred_at=last_week))  # fmt: skip

    print("\nWhat happened:")
    out = _Summary()

    def sent(key: str) -> list[str]:
        return sorted(r.channel for r in notifications.deliveries(key=key) if r.status == "sent")

    out.line(
        _wait(lambda: len(sent("booking:B1:confirmed")) == 3),
        "notifications: booking.created -> booking_confirmation by "
        + ", ".join(sent("booking:B1:confirmed")),
    )
    out.line(
        _wait(lambda: bool(receiver.received)),
        f"webhooks: booking.created -> {receiver.url}: "
        + "; ".join(
            f"{kind} ({msg}, signature {'verified' if ok else 'INVALID'})"
            for kind, msg, ok in receiver.received
        ),
    )
    out.line(
        _wait(lambda: len(payouts.balances()) == 3),
        "outbox: 3 earnings recorded in one transaction, relayed to payouts.record",
    )
    families.trigger("payouts.weekly")

    def settled() -> Any:
        run = _last_run("payouts.weekly")
        return run if run is not None and run.figures.get("pending") == 0 else None

    run = settled() if _wait(settled) else None
    paid = run.figures if run else {}
    out.line(
        run is not None and run.outcome == "succeeded" and paid.get("paid") == 2,
        f"payouts: payouts.weekly {paid.get('period')}: {paid.get('paid')} vendors paid "
        f"{paid.get('total_paid')}, {paid.get('carried_forward')} carried forward below the minimum",
    )
    emailed = _wait(
        lambda: len(rs := _receipts()) == 2 and all(sent(f"payout-receipt:{r.payout_id}") for r in rs)
    )
    receipts = _receipts()
    out.line(
        emailed,
        "payouts: receipts emailed to "
        + ", ".join(
            f"{r.vendor_id} ({r.id}, {Money.from_minor(r.amount_minor, r.currency).amount} {r.currency})"
            for r in receipts
        ),
    )
    families.trigger("payouts.settlement", day=datetime.now(UTC).date().isoformat())

    def exported() -> Any:
        found = exports.exports(dataset="payouts.settlement")
        return found[0] if found and found[0].status in ("done", "failed") else None

    _wait(exported)
    export = exported()
    where = workdir / "storage" / export.storage_key if export else None
    told = _wait(lambda: any(r.status == "sent" for r in notifications.deliveries(user_id="operators")), 15)
    out.line(
        told and export is not None and export.status == "done" and where is not None and where.is_file(),
        f"exports: payouts.settlement -> {where} ({getattr(export, 'rows', '?')} rows, "
        f"{getattr(export, 'size', '?')} bytes); ops@example.com told",
    )
    families.trigger("cleanup.daily")
    _wait(lambda: _last_run("cleanup.daily"))
    cleaned = _last_run("cleanup.daily")
    rows = cleaned.figures.get("tasks", {}).get("bgjobs.runs", {}).get("rows") if cleaned else None
    out.line(rows == 3, f"cleanup: cleanup.daily deleted {rows} bgjobs_runs rows older than 90 days")

    def counted_five() -> Any:
        run = _last_run("demo.report", "cron")
        return run is not None and run.figures.get("welcome_emails") == 5

    out.line(
        _wait(counted_five, 20),
        "scheduler + events: demo.report (cron, @every 5s) counts 5 welcome emails: 4 sent directly "
        "(a duplicate skipped) and 1 through the user.signed_up event",
    )
    def counted() -> list[str]:
        return [line for line in scrape(metrics_port).splitlines() if line.startswith("bgjobs_jobs_total{")]

    # Each worker process applies its tallies once a second, each on its own clock: wait until
    # the last job is counted and two scrapes over a second apart agree (every process flushed).
    seen: list[list[str]] = [[]]

    def flushed() -> bool:
        before, seen[0] = seen[0], counted()
        return seen[0] == before and any('actor="cleanup.daily"' in line for line in seen[0])

    _wait(flushed, 20, interval=1.2)
    print("\n  " + "\n  ".join(seen[0]))
    print(f"\n  metrics: http://127.0.0.1:{metrics_port}/metrics")
    receiver.close()
    return out.ok


def _console_port() -> int | None:
    """A port for the console, or None when the console extra is not installed."""
    import importlib.util

    installed = all(importlib.util.find_spec(name) for name in ("fastapi", "uvicorn"))
    return free_port() if installed else None


def _console_line(port: int | None) -> str:
    if port is None:
        return "not started (pip install 'bgjobs[console]' to see the dashboard)"
    return f"http://127.0.0.1:{port}/"


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to all at once (each shuts down cleanly, side by side), then wait; SIGKILL after 20 s."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(*, keep: bool = False, processes: int = 2) -> int:
    """Start the stack, drive sample work, print a summary; with ``keep`` run until Ctrl-C."""
    workdir = Path(tempfile.mkdtemp(prefix="bgjobs-dev-"))
    metrics_port = free_port()
    started: list[subprocess.Popen[bytes]] = []
    with stop_on_signals(), RedisServer() as redis_server:  # `kill <pid>` cleans up as Ctrl-C does
        env = _env(redis_server.url, workdir, metrics_port)
        os.environ.update(env)
        from . import db, runtime

        runtime.reset()
        db.upgrade()
        # The worker's and the scheduler's logs (and the console adapters' messages) go to one
        # file, so the summary reads on its own; its tail is shown if anything did not happen.
        log_path = workdir / "dev.log"
        log = log_path.open("ab")
        console = _console_port()
        try:
            commands = [
                [sys.executable, "-m", "dramatiq", "bgjobs.actors", "-p", str(processes), "-t", "4"],
                [sys.executable, "-m", "bgjobs.cli", "scheduler"],
            ]
            if console is not None:
                commands.append([sys.executable, "-m", "bgjobs.cli", "console", "--port", str(console)])
            for argv in commands:
                started.append(subprocess.Popen(argv, env=os.environ, stdout=log, stderr=subprocess.STDOUT))
            print(f"bgjobs dev: redis {redis_server.url}, sqlite {workdir / 'bgjobs.db'}, {processes} "
                  f"worker processes, the scheduler, storage in {workdir / 'storage'}\n"
                  f"  console: {_console_line(console)}\n"
                  f"  worker, scheduler and console logs: {log_path}", flush=True)  # fmt: skip
            done = _drive(workdir, metrics_port)
            if not done:
                tail = log_path.read_text(errors="replace").splitlines()[-40:]
                print("\nThe last lines of the worker and scheduler logs:\n  " + "\n  ".join(tail))
            if keep:
                print("\nRunning; Ctrl-C (or SIGTERM) stops everything. From another shell:\n"
                      f"  export BGJOBS_BROKER_URL={env['BGJOBS_BROKER_URL']} "
                      f"BGJOBS_DATABASE_URL={env['BGJOBS_DATABASE_URL']}\n"
                      f"  bgjobs status; bgjobs runs; tail -f {log_path}", flush=True)  # fmt: skip
                started[0].wait()
            return 0 if done else 1
        except KeyboardInterrupt:
            return 0
        finally:
            _stop(started)
            log.close()
            shutil.rmtree(workdir, ignore_errors=True)
