"""The cost of ``import bgjobs`` and of each family a host imports to send, beside ``import
dramatiq``, each in fresh interpreters, same run; then of importing each family's sending
function (the first use, which loads what sending needs: SQLAlchemy, the settings, the broker);
and whether either loads what only a worker needs (aiohttp, the consumer, its handlers).

python benchmarks/imports.py [--rounds 15]

Each round starts a new interpreter per module and reads ``-X importtime``'s cumulative figure
for the module imported, so the interpreter's own start-up is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys


def cumulative_us(module: str) -> int:
    argv = [sys.executable, "-X", "importtime", "-c", f"import {module}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    for line in reversed(done.stderr.splitlines()):
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    raise RuntimeError(f"no importtime line for {module}")


#: The families a host imports to send: each should cost at most 3x ``import dramatiq``.
FAMILIES = ("bgjobs.notifications", "bgjobs.webhooks", "bgjobs.payouts", "bgjobs.exports")
#: Each family's sending function, as a host first uses it.
SENDING = {
    "bgjobs.notifications": "send", "bgjobs.webhooks": "publish", "bgjobs.payouts": "record_earning",
    "bgjobs.exports": "request",
}  # fmt: skip
_WORKER_ONLY = ("m == 'aiohttp' or m == 'bgjobs.consumer' or m.endswith(('.actors', '._dispatch', "
                "'._transport'))")  # fmt: skip


def worker_only(statement: str) -> list[str]:
    """What running ``statement`` loads that only a worker needs."""
    probe = f"import sys; {statement}; print(' '.join(sorted(m for m in sys.modules if {_WORKER_ONLY})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.split()


def wall_us(statement: str) -> int:
    """The time ``statement`` takes in a fresh interpreter, in microseconds."""
    probe = f"import time; t = time.perf_counter(); {statement}; print(int((time.perf_counter() - t) * 1e6))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    modules = ("dramatiq", "bgjobs", *FAMILIES)
    figures: dict[str, list[int]] = {m: [] for m in modules}
    for _ in range(args.rounds):
        for module in modules:
            figures[module].append(cumulative_us(module))
    dramatiq_ms = statistics.median(figures["dramatiq"]) / 1000
    bgjobs_ms = statistics.median(figures["bgjobs"]) / 1000
    print(f"imports: median of {args.rounds} fresh interpreters each")
    print(f"import dramatiq: {dramatiq_ms:8.1f} ms")
    print(f"import bgjobs:   {bgjobs_ms:8.1f} ms")
    print(f"ratio:           {bgjobs_ms / dramatiq_ms:8.2f}x  (goal <= 3x)")
    for family in FAMILIES:
        ms = statistics.median(figures[family]) / 1000
        shown = ", ".join(worker_only(f"import {family}")) or "-"
        print(f"import {family}: {ms:8.1f} ms  {ms / dramatiq_ms:6.2f}x  (goal <= 3x)  loads: {shown}")
    statements = ["import dramatiq", *(f"from {f} import {name}" for f, name in SENDING.items())]
    walls: dict[str, list[int]] = {s: [] for s in statements}
    for _ in range(args.rounds):
        for statement in statements:
            walls[statement].append(wall_us(statement))
    base = statistics.median(walls["import dramatiq"]) / 1000
    print(f"first use, wall time: import dramatiq {base:.1f} ms")
    for statement in statements[1:]:
        ms = statistics.median(walls[statement]) / 1000
        shown = ", ".join(worker_only(statement)) or "-"
        print(f"{statement}: {ms:8.1f} ms  {ms / base:6.2f}x  loads: {shown}")


if __name__ == "__main__":
    main()
