"""The same no-op as a bgjobs typed actor (validation, middleware, metrics)."""

import bgjobs


class Noop(bgjobs.Payload):
    id: int
    name: str


@bgjobs.actor(queue="default")
def noop(payload: Noop) -> None:
    """Does nothing: the benchmark measures the machinery around it."""
