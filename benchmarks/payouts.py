"""Payout runs at scale: 1,000,000 ledger entries across 10,000 vendors, on SQLite and PostgreSQL.

For each database, in fresh child processes (so each phase's peak RSS is its own):

1. naive: load every unpaid entry and sum per vendor in Python, what a hand-written worker does;
2. bgjobs: ``plan_payouts()``, the run's planning transaction: link every entry to its payout and
   insert 10,000 payouts, in two set-based statements;

then ``dramatiq bgjobs.actors -p 2 -t 8`` pays the first N payouts through the HTTP payment
adapter to a local gateway (payouts/s), in jobs of a batch of payouts as a run sends them, beside
the obvious alternative in the same run: a bare loop calling the same adapter with the same
idempotency keys from 16 threads (the worker's concurrency) against a fresh gateway, with no
queue, no claim and no receipt.

    python benchmarks/payouts.py [--entries 1000000] [--vendors 10000] [--pay 2000] [--db sqlite,postgresql]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import child, database, peak_rss_mb, phased_parser, worker  # noqa: E402

PERIOD = "2025-W23"
#: Payouts paid before the measured ones, a job each, by the worker and by the bare loop alike: a
#: worker's first jobs open its database connections and build its adapter (about 0.2 s), which a
#: run of 500 payouts (under a second) would otherwise count as paying.
WARM = 32


def populate(url: str, entries: int, vendors: int) -> float:
    """Insert the ledger with Core executemany in batches (setup, not measured against anything)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from bgjobs import db
    from bgjobs.payouts._ledger import split
    from bgjobs.payouts._models import LedgerEntry

    engine = db.engine_for(url)
    db.upgrade(engine)
    start = time.perf_counter()
    base = datetime(2025, 6, 2, tzinfo=UTC)
    rate = __import__("decimal").Decimal("0.20")
    batch: list[dict[str, object]] = []
    with engine.begin() as conn:
        for i in range(entries):
            gross = 1_000 + (i * 7919) % 49_000
            vendor_share, platform = split(gross, rate)
            batch.append({
                "vendor_id": f"vendor-{i % vendors:05d}", "currency": "USD", "kind": "earning",
                "source_id": f"booking-{i}", "gross_minor": gross, "vendor_minor": vendor_share,
                "platform_minor": platform, "rate": "0.20", "description": None,
                "occurred_at": base + timedelta(seconds=i % 500_000), "created_at": base,
            })  # fmt: skip
            if len(batch) == 10_000:
                conn.execute(insert(LedgerEntry.__table__), batch)  # type: ignore[attr-defined]
                batch = []
        if batch:
            conn.execute(insert(LedgerEntry.__table__), batch)  # type: ignore[attr-defined]
    return time.perf_counter() - start


def phase(name: str, url: str) -> dict[str, float]:
    """One measured phase, in this (child) process."""
    os.environ["BGJOBS_DATABASE_URL"] = url
    os.environ["BGJOBS_BROKER_URL"] = "stub://"
    from sqlmodel import col, select

    from bgjobs import db
    from bgjobs.payouts._models import LedgerEntry
    from bgjobs.payouts._periods import period_for
    from bgjobs.payouts._planning import plan_payouts

    period = period_for("weekly", PERIOD, timezone="UTC")
    start = time.perf_counter()
    if name == "naive":
        totals: dict[tuple[str, str], int] = {}
        with db.session(db.engine_for(url)) as s:
            unpaid = select(LedgerEntry).where(col(LedgerEntry.payout_id).is_(None),
                                               col(LedgerEntry.occurred_at) < period.end)  # fmt: skip
            for entry in s.exec(unpaid).all():
                key = (entry.vendor_id, entry.currency)
                totals[key] = totals.get(key, 0) + entry.vendor_minor
        groups = len(totals)
    else:
        plan_payouts(period, run_id="bench")
        from sqlalchemy import func

        from bgjobs.payouts._models import Payout

        with db.session(db.engine_for(url)) as s:
            groups = int(s.exec(select(func.count()).select_from(Payout)).one())
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "groups": groups}


def pay(url: str, count: int) -> float:
    """Pay the first ``count`` planned payouts through a real worker; payouts/s."""
    from bgjobs.embedded import RedisServer
    from tests.support.receivers import payment_gateway

    with RedisServer() as server, payment_gateway() as gateway:
        env = {"BGJOBS_BROKER_URL": server.url, "BGJOBS_DATABASE_URL": url, "BGJOBS_PAYMENT": "http",
               "BGJOBS_HTTP_PAYMENT__URL": gateway.url}  # fmt: skip
        os.environ.update(env)
        from bgjobs import runtime

        runtime.reset()
        from sqlmodel import col, select

        from bgjobs import db
        from bgjobs.payouts._models import Payout, PayoutBatch
        from bgjobs.payouts._planning import pay_batches
        from bgjobs.payouts.actors import pay_vendors
        from bgjobs.typed import send_messages

        with db.session(db.engine_for(url)) as s:
            found = list(s.exec(select(Payout.id).order_by(col(Payout.id)).limit(count + WARM)))
        warm, ids = found[:WARM], found[WARM:]
        with worker("bgjobs.actors", env, processes=2, threads=8):
            warming = [PayoutBatch(payout_ids=[i]) for i in warm]  # other payouts, a job for each
            for batches, total in ((warming, len(warm)), (pay_batches(ids), len(found))):
                start = time.perf_counter()
                send_messages(pay_vendors.actor.broker, [pay_vendors.message(b) for b in batches])
                deadline = time.monotonic() + 600
                while len(gateway.payouts) < total:
                    if time.monotonic() > deadline:
                        raise SystemExit("timed out paying")
                    time.sleep(0.01)
                elapsed = time.perf_counter() - start
    with payment_gateway() as fresh:  # the same keys, answered fresh, after the same warm-up
        bare = _bare_loop(fresh.url, url, warm, ids)
    return len(ids) / elapsed, bare


def _bare_loop(gateway_url: str, url: str, warm: list[str], ids: list[str]) -> float:
    """The same payouts through the same adapter, called from 16 threads, after paying ``warm``
    the same way; payouts/s."""
    from concurrent.futures import ThreadPoolExecutor

    from pydantic import SecretStr  # noqa: F401  (the settings' types, as the worker reads them)

    from bgjobs import db
    from bgjobs.adapters.http import HttpPaymentGateway
    from bgjobs.payouts._models import Payout
    from bgjobs.ports import PayoutRequest
    from bgjobs.settings import Settings

    def requests(of: list[str]) -> list[PayoutRequest]:
        with db.session(db.engine_for(url)) as s:
            rows = [s.get(Payout, i) for i in of]
        return [PayoutRequest(payee_id=p.vendor_id, amount=p.amount, idempotency_key=p.id,
                              description=f"payout {p.run_key}") for p in rows if p is not None]  # fmt: skip

    gateway = HttpPaymentGateway(Settings(http_payment={"url": gateway_url}).http_payment)  # type: ignore[arg-type]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda r: gateway.payout(request=r), requests(warm)))
        measured = requests(ids)
        start = time.perf_counter()
        list(pool.map(lambda r: gateway.payout(request=r), measured))
        elapsed = time.perf_counter() - start
    gateway.close()
    return len(measured) / elapsed


def main() -> None:
    parser = phased_parser(__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--vendors", type=int, default=10_000)
    parser.add_argument("--pay", type=int, default=2_000)
    args, _ = parser.parse_known_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.url)))
        return

    print(f"payouts: {args.entries:,} ledger entries across {args.vendors:,} vendors")
    for kind in args.db.split(","):
        with database(kind, "payouts") as url:
            loaded = populate(url, args.entries, args.vendors)
            naive = child(__file__, "--phase", "naive", "--url", url)
            ours = child(__file__, "--phase", "bgjobs", "--url", url)
            rate, bare = pay(url, args.pay)
        print(f"  {kind} (ledger loaded in {loaded:.0f} s)")
        for label, got, what in (
            ("naive: load all, sum in Python", naive, "balances"),
            ("bgjobs: plan in SQL", ours, "payouts planned, every entry linked"),
        ):
            print(f"    {label:32} {got['seconds']:6.2f} s  peak RSS {got['peak_rss_mb']:6.0f} MB"
                  f"  ({got['groups']:.0f} {what})")  # fmt: skip
        print(f"    bgjobs / naive: time {ours['seconds'] / naive['seconds']:.2f}x, "
              f"peak RSS {ours['peak_rss_mb'] / naive['peak_rss_mb']:.2f}x")  # fmt: skip
        print(f"    paying through the HTTP adapter, -p 2 -t 8: {rate:.0f} payouts/s ({args.pay} payouts); "
              f"a bare loop calling the adapter from 16 threads: {bare:.0f}/s; ratio {rate / bare:.2f}x")


if __name__ == "__main__":
    main()
