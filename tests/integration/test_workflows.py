"""Workflows: stages in order, a group's steps in parallel, results handed on, a dead-lettered step
stopping the run until its requeue resumes it, cancel.

The stub broker's tests pin the semantics; the worker tests run a workflow in real
``dramatiq bgjobs.actors`` processes on Redis and RabbitMQ, one of them SIGKILLed mid-stage.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import pytest

import bgjobs
from bgjobs import workflows
from bgjobs.errors import ConfigurationError, InvalidPayload
from bgjobs.testing import JobsHarness
from tests.support import batch_actors
from tests.support.batch_actors import Step, flaky_step, step
from tests.support.workers import WorkerProcess, wait_for

Start = Callable[..., JobsHarness]


def _three_stages(prefix: str = "", sleep_s: float = 0.0, middle: str = "resize") -> workflows.Workflow:
    return bgjobs.workflow(
        step.message(Step(key=f"{prefix}fetch", sleep_s=sleep_s)),
        bgjobs.group(step.message(Step(key=f"{prefix}{middle}-{n}", sleep_s=sleep_s)) for n in range(3)),
        step.message(Step(key=f"{prefix}publish")),
        description="thumbnails",
    )


def test_each_stage_starts_once_the_one_before_has_succeeded_and_reads_its_results(stub: JobsHarness) -> None:
    run = _three_stages().start()
    stub.drain()
    s = workflows.status(run.id)
    assert (s.state, s.stage, s.description) == ("succeeded", 2, "thumbnails")
    assert [[x.state for x in stage] for stage in s.stages] == [["succeeded"], ["succeeded"] * 3,
                                                                ["succeeded"]]  # fmt: skip
    assert s.finished_at is not None and s.failed_step is None
    # Each step saw every result of the stages before its own, and ran once
    assert collections.Counter(batch_actors.RUNS) == {
        "fetch after ": 1, "resize-0 after fetch": 1, "resize-1 after fetch": 1, "resize-2 after fetch": 1,
        "publish after fetch,resize-0,resize-1,resize-2": 1,
    }
    results = workflows.results(run.id)
    keys = [[r["key"] for r in stage] for stage in results]
    assert keys == [["fetch"], ["resize-0", "resize-1", "resize-2"], ["publish"]]
    assert s.as_dict()["stages"][1][2]["state"] == "succeeded"
    assert run.id in [r.id for r in workflows.recent()]


def test_a_dead_lettered_step_stops_the_run_and_its_requeue_resumes_it(stub: JobsHarness) -> None:
    run = _three_stages(middle="fail-once").start()
    stub.drain()
    s = workflows.status(run.id)
    assert s.state == "failed" and s.failed_step is not None
    assert (s.failed_step.stage, s.failed_step.actor) == (1, "step")
    assert "fail-once-0 fails once" in (s.failed_step.reason or "")
    assert [x.state for x in s.stages[2]] == ["waiting"]  # the stage after it never started
    assert not any(r.startswith("publish") for r in batch_actors.RUNS)
    # What `bgjobs dead-letters requeue` does: the same message, on its queue again
    for letter in stub.dead_letters:
        stub.broker.enqueue(letter.copy(options={k: v for k, v in letter.options.items() if k != "retries"}))
    stub.drain()
    s = workflows.status(run.id)
    assert s.state == "succeeded" and s.failed_step is None
    assert collections.Counter(r for r in batch_actors.RUNS if r.startswith("publish")) == {
        "publish after fail-once-0,fail-once-1,fail-once-2,fetch": 1
    }


def test_a_retried_step_keeps_its_place_in_the_run(stub: JobsHarness) -> None:
    run = bgjobs.workflow(flaky_step.message(Step(key="flaky")), step.message(Step(key="after"))).start()
    stub.drain()
    stub.release()  # the retry's delay
    stub.drain()
    s = workflows.status(run.id)
    assert s.state == "succeeded", s
    assert batch_actors.RUNS == ["flaky attempt", "flaky after retry", "after after flaky"]
    assert workflows.results(run.id)[0] == [{"key": "flaky"}]


def test_a_cancelled_run_skips_its_steps_not_started_and_starts_no_later_stage(stub: JobsHarness) -> None:
    stub.worker.pause()
    run = _three_stages().start()
    assert workflows.cancel(run.id).state == "cancelled"
    stub.worker.resume()
    stub.drain()
    s = workflows.status(run.id)
    assert s.state == "cancelled" and s.finished_at is not None
    assert [x.state for x in s.stages[0]] == ["cancelled"]
    assert [x.state for x in s.stages[1]] == ["waiting"] * 3
    assert batch_actors.RUNS == []
    assert workflows.cancel(run.id).state == "cancelled"  # again: nothing changes


def test_a_result_over_the_bound_fails_its_step_with_the_reason(stub: JobsHarness) -> None:
    big = step.message(Step(key="big", pad=workflows_limit() + 1))
    run = bgjobs.workflow(big, step.message(Step(key="no"))).start()
    stub.drain()
    s = workflows.status(run.id)
    assert s.state == "failed" and s.failed_step is not None
    assert "over 65536: store it" in (s.failed_step.reason or "")
    assert [x.state for x in s.stages[1]] == ["waiting"]


def workflows_limit() -> int:
    from bgjobs.workflow_steps import RESULT_LIMIT

    return RESULT_LIMIT


def test_mistakes_are_refused_naming_them(stub: JobsHarness) -> None:
    with pytest.raises(InvalidPayload, match="workflow: it has no stages"):
        bgjobs.workflow()
    with pytest.raises(InvalidPayload, match="group: it has no steps"):
        bgjobs.group([])
    with pytest.raises(InvalidPayload, match=r"a step is dict, not actor\.message"):
        bgjobs.workflow({"key": "x"})  # type: ignore[arg-type]
    with pytest.raises(InvalidPayload, match="no workflow 'w_nope'"):
        workflows.status("w_nope")
    with pytest.raises(InvalidPayload, match="no workflow 'w_nope'"):
        workflows.cancel("w_nope")
    with pytest.raises(ConfigurationError, match="not in a workflow's step"):
        bgjobs.workflow_results()
    # A step too large for the broker is refused at start, not in a worker at its stage
    huge = step.message(Step(key="x" * 1_100_000))
    with pytest.raises(InvalidPayload, match=r"more than 1048576 \(BGJOBS_WORKER__MAX_MESSAGE_BYTES\)"):
        bgjobs.workflow(step.message(Step(key="small")), huge).start()
    assert batch_actors.RUNS == [] and workflows.recent() == []


def _lines(path: Path) -> collections.Counter[str]:
    return collections.Counter(path.read_text().splitlines()) if path.exists() else collections.Counter()


def test_a_workflow_runs_each_stage_once_through_a_sigkill_on_every_engine(batch_env: dict[str, str]) -> None:
    env = batch_env
    runs = Path(env["TEST_RUNS_FILE"])
    wide = bgjobs.workflow(
        step.message(Step(key="fetch")),
        bgjobs.group(step.message(Step(key=f"resize-{n}", sleep_s=0.05)) for n in range(60)),
        step.message(Step(key="publish")),
    ).start()
    failing = _three_stages(prefix="b-", middle="fail").start()
    first = WorkerProcess(env, processes=2, threads=4).start()
    again = WorkerProcess(env, processes=1, threads=4)
    try:
        wait_for(lambda: sum(1 for k in _lines(runs) if k.startswith("resize")) >= 10, timeout=60,
                 what="ten resize steps")  # fmt: skip
        first.kill()  # mid-stage: steps in flight run again, and count once
        again.start()
        wait_for(lambda: workflows.status(wide.id).state == "succeeded", timeout=120, what="the workflow")
        wait_for(lambda: workflows.status(failing.id).state == "failed", timeout=60, what="the failing one")
    finally:
        first.kill()
        again.terminate()
    counts = _lines(runs)
    expected = "publish after " + ",".join(sorted(["fetch", *(f"resize-{n}" for n in range(60))]))
    assert counts[expected] == 1 and counts["fetch after "] == 1
    assert all(counts[f"resize-{n} after fetch"] >= 1 for n in range(60))
    s = workflows.status(wide.id)
    assert all(x.state == "succeeded" for stage in s.stages for x in stage)
    failed = workflows.status(failing.id).failed_step
    assert failed is not None and "PermanentError: b-fail-" in (failed.reason or "")
    assert not any(k.startswith("b-publish") for k in counts)


def test_bgjobs_workflows_lists_shows_and_cancels(
    stub: JobsHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from bgjobs import cli

    stub.worker.pause()
    run = _three_stages().start()
    assert cli.main(["workflows", "list"]) == 0
    listed = capsys.readouterr().out
    assert run.id in listed and "thumbnails" in listed and "1 of 3" in listed
    assert cli.main(["workflows", "show", run.id]) == 0
    shown = json.loads(capsys.readouterr().out)
    states = [[s["state"] for s in stage] for stage in shown["stages"]]
    assert states == [["queued"], ["waiting"] * 3, ["waiting"]]
    assert cli.main(["workflows", "cancel", run.id]) == 0
    assert capsys.readouterr().out.startswith(f"{run.id} is cancelled: steps not started yet are skipped")
    stub.worker.resume()
    stub.drain()
    assert cli.main(["workflows", "list", "--json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["id"] == run.id]
    assert row["state"] == "cancelled" and row["stages"][0][0]["state"] == "cancelled"
    assert cli.main(["workflows", "show", "w_nope"]) != 0
    assert capsys.readouterr().err.strip().endswith("workflow: no workflow 'w_nope' (runs are kept 7 days)")


def test_a_step_cancelled_on_its_own_stops_the_run_as_cancelled(stub: JobsHarness) -> None:
    stub.worker.pause()
    run = _three_stages().start()
    (first,) = workflows.status(run.id).stages[0]
    bgjobs.cancel(first.message_id, by="test")
    stub.worker.resume()
    stub.drain()
    s = workflows.status(run.id)
    assert s.state == "cancelled" and [x.state for x in s.stages[0]] == ["cancelled"]
    assert batch_actors.RUNS == []
