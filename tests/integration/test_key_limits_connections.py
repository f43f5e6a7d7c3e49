"""A per-key cap holds when RabbitMQ hands a running job out again because its worker's connection
dropped (the worker lives on and finishes the first run): the copy waits for the first run to end.
On Redis a live worker never puts back a message one of its threads holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgjobs import runtime
from bgjobs.keying import keyed_of
from tests.support.batch_actors import Item, capped_item
from tests.support.peaks import peak_per_key
from tests.support.rabbitmq import RabbitNode, _ctl
from tests.support.workers import WorkerProcess, wait_for

KEY = "lost-connection"


def _close_connections(node: RabbitNode) -> str:
    """Close every client connection to the test's virtual host, as a network cut would."""
    done = _ctl(node.env, "close_all_connections", "-p", node.vhost, "a test cuts the connection")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("engine_env", ["rabbitmq"], indirect=True)
def test_a_copy_handed_out_while_its_first_run_goes_on_waits_for_that_run_to_end(
    batch_env: dict[str, str], rabbit_vhost: RabbitNode
) -> None:
    runs = Path(batch_env["TEST_RUNS_FILE"])

    def lines() -> list[str]:
        return runs.read_text().splitlines() if runs.exists() else []

    def starts() -> list[str]:
        return [line for line in lines() if line.startswith(f"capped {KEY} start")]

    # Given a key capped at one job, and a job of it running for 10 s on a live worker (whose consumer
    # reconnects 3 s after losing its connection)
    keyed = keyed_of(runtime.current().broker)
    keyed.override("capped_item", "limit", "1", key=KEY)
    worker = WorkerProcess(batch_env, processes=1, threads=2).start()
    try:
        capped_item.send(Item(key=KEY, sleep_s=10.0))
        wait_for(lambda: len(starts()) == 1, timeout=60, what="the job to start")
        # When RabbitMQ loses the worker's connections, it hands the unacknowledged job out again
        _close_connections(rabbit_vhost)
        # Then the copy waits in its key's lane while the first run goes on
        wait_for(lambda: [k.waiting for k in keyed.states("capped_item") if k.key == KEY] == [1], timeout=30,
                 what="the copy to wait in its lane")  # fmt: skip
        assert len(starts()) == 1
        # And runs once the first run has ended (at least once: both run), never beside it
        wait_for(lambda: len(starts()) == 2, timeout=60, what="the copy to run after the first run")
        wait_for(lambda: sum(f"capped {KEY} end" in line for line in lines()) == 2, timeout=30,
                 what="both runs to end")  # fmt: skip
    finally:
        worker.terminate()
        keyed.override("capped_item", "limit", None, key=KEY)
    assert peak_per_key(lines()) == {KEY: 1}, lines()
