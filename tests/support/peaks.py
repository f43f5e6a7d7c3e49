"""The peak of jobs running at once per key, from the start and end lines the jobs wrote
themselves (``capped <key> start|end <time> <pid> <n>``), not from anything bgjobs reports."""

from __future__ import annotations

from collections import defaultdict


def peak_per_key(lines: list[str], killed: dict[int, float] | None = None) -> dict[str, int]:
    """Each key's most jobs between their start and end at one moment. A job whose process was
    SIGKILLed (``killed``: pid -> when) never wrote its end: it ran until the kill."""
    events: dict[str, list[tuple[float, int]]] = defaultdict(list)
    open_: dict[tuple[str, int, str], float] = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 6 or parts[0] != "capped":
            continue
        _, key, what, at, pid, n = parts
        if what == "start":
            open_[(key, int(pid), n)] = float(at)
            events[key].append((float(at), 1))
        elif open_.pop((key, int(pid), n), None) is not None:
            events[key].append((float(at), -1))
    for (key, pid, _), _start in open_.items():
        end = (killed or {}).get(pid)
        assert end is not None, f"a {key} job in live process {pid} never ended"
        events[key].append((end, -1))
    peaks = {}
    for key, found in events.items():
        running = peak = 0
        for _, change in sorted(found, key=lambda e: (e[0], e[1])):
            running += change
            peak = max(peak, running)
        peaks[key] = peak
    return peaks
