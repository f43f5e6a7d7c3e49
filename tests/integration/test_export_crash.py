"""A real worker SIGKILLed in the middle of an export: nothing appears under the final key, and the
redelivered job writes the whole file with the right checksum."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgjobs import exports
from tests.support.export_datasets import finish_after_kill
from tests.support.workers import WorkerProcess, use_environment, wait_for

ROWS = 20_000


def test_a_killed_export_leaves_no_partial_file_and_completes_on_redelivery(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "storage"
    env = {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'exports.db'}",
        "BGJOBS_STORAGE": "localfs",
        "BGJOBS_LOCALFS__ROOT": str(root),
        "BGJOBS_JOBS": '["tests.support.export_datasets"]',
        "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": "2000",
        "BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS": "500",
        "BGJOBS_METRICS__ENABLED": "false",
    }
    use_environment(monkeypatch, env)
    # 20,000 rows, pausing 0.1 s every 1,000: about 2 s of writing
    export_id = exports.request("counted", filters={"rows": ROWS, "pause": 0.1})
    final = root / exports.get(export_id).storage_key

    worker = WorkerProcess(env, processes=1, threads=2).start()
    try:
        wait_for(lambda: list(final.parent.glob("*.part")) if final.parent.exists() else False, timeout=60,
                 what="the export to start writing")  # fmt: skip
        wait_for(lambda: any(p.stat().st_size > 0 for p in final.parent.glob("*.part")), timeout=60,
                 what="some rows to be written")  # fmt: skip
    finally:
        worker.kill()
    # Killed mid-write: a temporary file, never the final one
    assert not final.exists()
    assert exports.get(export_id).status == "running"

    finish_after_kill(env, export_id, final, ROWS)
