"""examples/prometheus: the configs parse, and every series and label they use is one that is exported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from dramatiq.middleware import prometheus as dramatiq_prometheus

import bgjobs
from bgjobs.settings import MetricsSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prometheus"
SOURCES = {p: p.read_text() for p in Path(bgjobs.__file__).parent.rglob("*.py")}
DRAMATIQ = Path(dramatiq_prometheus.__file__).read_text()
SERIES = re.compile(r"\b((?:bgjobs|dramatiq)_[a-z_]+)")
LABELS = re.compile(r"by \(([^)]*)\)|\{\{\s*\$?\.?(?:labels\.)?(\w+)\s*\}\}|(\w+)\s*!?=~?\s*\"")


def _declared_in(name: str) -> str:
    """The source that declares a series (a histogram's _bucket/_sum/_count are its own)."""
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if f'"{base}"' in DRAMATIQ:
        return DRAMATIQ
    declares = ("counter(", "gauge(", "MetricFamily(")
    found = [text for text in SOURCES.values() if f'"{base}"' in text and any(d in text for d in declares)]
    assert found, f"{name} is not a series bgjobs or Dramatiq exports"
    return "\n".join(found)


def _check(expr: str, legend: str = "") -> int:
    names = SERIES.findall(expr)
    assert names, expr
    sources = "\n".join(_declared_in(n) for n in names)
    for match in LABELS.finditer(expr + " " + legend):
        for label in ",".join(g for g in match.groups() if g).split(","):
            label = label.strip()
            if label and label not in ("le", "job", "value", "deployment"):
                assert f'"{label}"' in sources, f"{label!r} is not a label of {names} ({expr})"
    return len(names)


def test_every_dashboard_panel_plots_exported_series_with_their_labels() -> None:
    dashboard = json.loads((EXAMPLE / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "bgjobs" and len(dashboard["panels"]) >= 10
    plotted = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            plotted += _check(target["expr"], target.get("legendFormat", ""))
    assert plotted >= 18
    text = json.dumps(dashboard)
    assert "bgjobs_jobs_total" in text and "dramatiq_message_duration_milliseconds_bucket" in text


def test_the_scrape_config_and_alerts_parse_and_use_exported_series() -> None:
    config = yaml.safe_load((EXAMPLE / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    targets = job["static_configs"][0]["targets"]
    assert job["metrics_path"] == "/metrics" and all(
        t.endswith(f":{MetricsSettings().port}") for t in targets
    )
    rules = yaml.safe_load((EXAMPLE / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"BgjobsDeadLetters", "BgjobsQueueBacklog", "BgjobsNoWorker",
                                           "BgjobsNotificationsOnBackup"}  # fmt: skip
    for rule in rules:
        if SERIES.search(rule["expr"]):
            _check(rule["expr"], rule["annotations"]["summary"])


def test_the_check_refuses_a_series_or_label_that_does_not_exist() -> None:
    import pytest

    with pytest.raises(AssertionError, match="not a series"):
        _check("rate(bgjobs_made_up_total[5m])")
    with pytest.raises(AssertionError, match="not a label"):
        _check("sum by (colour) (bgjobs_balance_alerts_total)")
