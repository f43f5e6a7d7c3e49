"""The cost of ``import bgjobs`` beside ``import dramatiq``, each in fresh interpreters, same run.

python benchmarks/imports.py [--rounds 15]

Each round starts a new interpreter per module and reads ``-X importtime``'s cumulative figure
for the top-level package, so the interpreter's own start-up is not counted.
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    figures: dict[str, list[int]] = {"dramatiq": [], "bgjobs": []}
    for _ in range(args.rounds):
        for module in ("dramatiq", "bgjobs"):
            figures[module].append(cumulative_us(module))
    dramatiq_ms = statistics.median(figures["dramatiq"]) / 1000
    bgjobs_ms = statistics.median(figures["bgjobs"]) / 1000
    print(f"imports: median of {args.rounds} fresh interpreters each")
    print(f"import dramatiq: {dramatiq_ms:8.1f} ms")
    print(f"import bgjobs:   {bgjobs_ms:8.1f} ms")
    print(f"ratio:           {bgjobs_ms / dramatiq_ms:8.2f}x  (goal <= 3x)")


if __name__ == "__main__":
    main()
