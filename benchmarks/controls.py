"""Unique jobs: what a unique key costs a send, and that ten processes sending one key run it once.

1. Sending: ``--sends`` sends one by one from one process of an actor without controls, and of the
   same actor declared ``unique=`` with a different key per send (each send takes its key), in
   the same run, alternating rounds; sends/s and the ratio.
2. Ten processes each send the same key ``--repeat`` times within the window; a worker then runs
   what was enqueued: exactly one job runs, and every send returned that job's id.

    python benchmarks/controls.py [--sends 5000] [--repeat 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bgjobs.embedded import RedisServer  # noqa: E402

_SENDER = """
import sys
from tests.support.batch_actors import Item, unique_item
one = Item(key="the-one", children=int(sys.argv[1]))
print(" ".join(sorted({unique_item.send(one).message_id for _ in range(int(sys.argv[2]))})), flush=True)
"""


def _rate(send: object, n: int, prefix: str) -> float:
    from tests.support.batch_actors import Item

    started = time.perf_counter()
    for i in range(n):
        send(Item(key=f"{prefix}-{i}"))  # type: ignore[operator]
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sends", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bgjobs-bench-controls-"))
    with RedisServer() as server:
        env = {"BGJOBS_BROKER_URL": server.url, "BGJOBS_DATABASE_URL": f"sqlite:///{workdir / 'c.db'}",
               "BGJOBS_JOBS": '["tests.support.batch_actors"]', "BGJOBS_METRICS__ENABLED": "false",
               "TEST_RUNS_FILE": str(workdir / "runs.txt")}  # fmt: skip
        os.environ.update(env)
        from bgjobs import runtime
        from tests.support.batch_actors import item, unique_item

        runtime.reset()
        plain, unique = [], []
        for r in range(args.rounds):
            plain.append(_rate(item.send, args.sends, f"p{r}"))
            unique.append(_rate(unique_item.send, args.sends, f"u{r}"))
        runtime.current().broker.client.flushdb()
        full = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-c", _SENDER]
        senders = [subprocess.Popen([*argv, str(n), str(args.repeat)], env=full, cwd=ROOT,
                                    stdout=subprocess.PIPE, text=True) for n in range(10)]  # fmt: skip
        answers = {s.communicate(timeout=600)[0].strip() for s in senders}
        from benchmarks.common import worker

        with worker("bgjobs.actors", env, processes=1, threads=4):
            runs = Path(env["TEST_RUNS_FILE"])
            deadline = time.monotonic() + 60
            while not (runs.exists() and runs.read_text().strip()):
                if time.monotonic() > deadline:
                    raise SystemExit("the one job never ran")
                time.sleep(0.05)
            from bgjobs.deadletters import operated_broker

            broker = operated_broker()
            while (q := broker.queue_sizes(["default"])["default"]).ready or q.in_flight:
                time.sleep(0.05)  # whatever else was enqueued runs before the count
        lines = runs.read_text().splitlines()
    p, u = sorted(plain)[len(plain) // 2], sorted(unique)[len(unique) // 2]
    print(f"unique jobs: {args.sends:,} sends one by one, median of {args.rounds} rounds: without "
          f"controls {p:,.0f}/s, unique (a key per send) {u:,.0f}/s, ratio {u / p:.2f}x")
    print(f"  10 processes x {args.repeat:,} sends of one key: {len(answers)} distinct id(s) returned, "
          f"{len(lines)} job(s) ran{'' if len(answers) == 1 and len(lines) == 1 else '  <- WRONG'}")
    if len(answers) != 1 or len(lines) != 1:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
