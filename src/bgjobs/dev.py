"""``bgjobs dev``: an embedded Redis, SQLite in a temp dir, a real worker, and sample work.

Everything it starts listens on 127.0.0.1 and is stopped when it exits (Ctrl-C included).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .embedded import RedisServer, free_port
from .observability import scrape

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
        # The demo's webhook endpoint is a plain-HTTP server on loopback, which the guard refuses.
        "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false",
        "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]',
        "dramatiq_prom_port": str(metrics_port),
        "dramatiq_prom_db": str(workdir / "prometheus"),
    }


class _Endpoint:
    """A webhook subscriber for the demo: a loopback HTTP server keeping each request it gets."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[tuple[bytes, dict[str, str]]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((body, dict(self.headers.items())))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _jobs_done(port: int) -> float:
    lines = scrape(port).splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("bgjobs_jobs_total{"))


def _sent_notifications() -> list[str]:
    from .notifications import deliveries

    return sorted(r.channel for r in deliveries(key="booking:B1:confirmed") if r.status == "sent")


def _drive(workdir: Path, metrics_port: int) -> bool:
    """Send the sample work, wait for it, print what happened; True if all of it was done."""
    from . import demo, events, jobs, outbox, runs, webhooks
    from .db import session

    subscriber = _Endpoint()
    endpoint = webhooks.add_endpoint(subscriber.url, event_types=["booking.*"], description="bgjobs dev")

    for user_id in range(1, 5):
        demo.demo_welcome.send({"user_id": user_id, "email": f"user{user_id}@example.com"})
    demo.demo_welcome.send({"user_id": 1, "email": "user1@example.com"})  # a duplicate: no second email
    events.publish("user.signed_up", {"user_id": 5, "email": "user5@example.com"})  # an event
    with session() as s:  # jobs born in a transaction go through the outbox
        for vendor in ("v1", "v2", "v3"):
            outbox.defer(s, demo.demo_payout, {"vendor_id": vendor, "amount": "520.00", "currency": "USD"})
    booking = {  # the notifications family: one event, three channels
        "booking_id": "B1", "trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"},
        "recipient": {"user_id": "u1", "email": "ann@example.com", "phone": "+447700900123",
                      "push_tokens": ["demo-device-token"]},
    }  # fmt: skip
    events.publish("booking.created", booking)
    receipts = workdir / "storage" / "receipts"
    done = _wait(lambda: receipts.is_dir() and len(list(receipts.glob("*.csv"))) == 3, timeout=60)
    done = done and _wait(lambda: _jobs_done(metrics_port) >= 9, timeout=30)
    jobs.trigger("demo.report")
    done = done and _wait(lambda: any(r.outcome == "succeeded" for r in runs.recent(job="demo.report")), 30)

    done = done and _wait(lambda: len(_sent_notifications()) == 3, timeout=30)
    done = done and _wait(lambda: bool(subscriber.received), timeout=30)
    subscriber.close()
    hooks = []
    for body, headers in subscriber.received:
        payload = webhooks.verify(body, headers, endpoint.secret.get_secret_value())
        hooks.append(f"{payload['type']} ({headers.get('webhook-id')}, signature verified)")

    counted = [line for line in scrape(metrics_port).splitlines() if line.startswith("bgjobs_jobs_total{")]
    print("\nWhat happened:")
    print("  4 welcome emails sent + 1 duplicate skipped, 1 sent through the user.signed_up event")
    print(f"  booking.created -> booking_confirmation sent by {', '.join(_sent_notifications())}")
    print(f"  booking.created -> webhook to {subscriber.url}: {'; '.join(hooks) or 'none arrived'}")
    print("  3 payouts deferred through the outbox in one transaction, each with a receipt")
    print(f"  receipts written: {sorted(p.name for p in receipts.glob('*.csv'))}")
    print("  " + "\n  ".join(counted or ["(no jobs counted yet)"]))
    for run in runs.recent(job="demo.report"):
        print(f"  batch run {run.job}: {run.outcome}, counts {run.counts}")
    print(f"  metrics: http://127.0.0.1:{metrics_port}/metrics")
    return done


def run(*, keep: bool = False, processes: int = 2) -> int:
    """Start the stack, drive sample work, print a summary; with ``keep`` run until Ctrl-C."""
    workdir = Path(tempfile.mkdtemp(prefix="bgjobs-dev-"))
    metrics_port = free_port()
    with RedisServer() as redis_server:
        env = _env(redis_server.url, workdir, metrics_port)
        os.environ.update(env)
        from . import db, settings

        settings.get_settings.cache_clear()
        db.upgrade()
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "bgjobs.actors", "-p", str(processes), "-t", "4"],
            env={**os.environ, **env},
        )
        try:
            print(
                f"bgjobs dev: redis {redis_server.url}, sqlite {workdir / 'bgjobs.db'}, "
                f"{processes} worker processes"
            )
            done = _drive(workdir, metrics_port)
            if keep:
                print("Running; Ctrl-C stops everything.")
                worker.wait()
            return 0 if done else 1
        except KeyboardInterrupt:
            return 0
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
            shutil.rmtree(workdir, ignore_errors=True)
