"""contrib/: the Grafana dashboard has the shape Grafana loads, and every PromQL expression in
it and in the alert rules names only metrics a running syncd exports (scraped for real)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import base_config
from harness import free_port, scrape

CONTRIB = Path(__file__).parent.parent / "contrib"
DASHBOARD = CONTRIB / "grafana-dashboard.json"
PANEL_TYPES = {"timeseries", "stat", "bargauge", "state-timeline", "table", "gauge"}
PROMQL_WORDS = {
    # aggregations, functions and keywords that can stand without "(" after them
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "le", "inf", "nan",
}  # fmt: skip
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "info": ("_info",),
}
"""The sample names of a family of each type, whether or not it has samples yet."""
NOT_SYNCD = {"up"}
"""Series Prometheus itself makes for every target: the alert rules may use them."""


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers that are not functions, keywords,
    label names (inside {} or by/on/... lists), strings, durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors, $__rate_interval included
    text = re.sub(r"\$\w+", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def exported_names(tmp_path: Path, sandbox: Any, make_daemon: Any) -> set[str]:
    """Families and sample names (with _total, _bucket, ...) of a real daemon's /metrics."""
    port = free_port()
    config = base_config(tmp_path, sandbox.url)
    config["metrics"] = {"listen": f"127.0.0.1:{port}"}
    make_daemon(config).start()
    samples, types = scrape(f"http://127.0.0.1:{port}/metrics")
    names = {name for name, _ in samples}
    for family, kind in types.items():
        names |= {family + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rule_exprs() -> list[str]:
    exprs = []
    for path in sorted(CONTRIB.glob("*.yml")):
        # promtool validates the YAML; the expressions are the `expr:` values.
        text = path.read_text()
        for block in re.findall(r"expr: \|\n((?:          .*\n)+)|expr: (.*)\n", text):
            exprs.append(block[0] or block[1])
    return exprs


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert isinstance(dashboard["uid"], str) and dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    covered: list[tuple[int, int]] = []
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        cells = [
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        ]
        assert not set(cells) & set(covered), f"{panel['title']} overlaps another panel"
        covered += cells
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        assert all(target["expr"].strip() for target in panel["targets"])
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("throughput", "queue", "oldest pending", "failures", "retries", "success"):
        assert topic in titles, topic
    assert "quota" in titles


def test_every_expression_names_exported_metrics(tmp_path, sandbox, make_daemon):
    exported = exported_names(tmp_path, sandbox, make_daemon)
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in dashboard_exprs(dashboard) for name in metric_names(expr)}
    assert used, "no metric found in the dashboard"
    assert used - exported == set(), "the dashboard reads metrics syncd does not export"
    rules = rule_exprs()
    assert len(rules) >= 5
    in_rules = {name for expr in rules for name in metric_names(expr)}
    assert in_rules - exported - NOT_SYNCD == set()
    for needed in ("syncd_oldest_pending_seconds", "syncd_last_success_timestamp_seconds"):
        assert needed in in_rules


def test_metric_names_reads_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, service) (rate(syncd_upload_duration_seconds_bucket"
        '{instance=~"$instance", code!~"2.."}[$__rate_interval]))) and on (instance) up == 0'
    )
    assert metric_names(expr) == {"syncd_upload_duration_seconds_bucket", "up"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", *map(str, sorted(CONTRIB.glob("*.yml")))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
