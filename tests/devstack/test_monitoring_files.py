"""deploy/prometheus/ (the alerts, as a rules file and as a PrometheusRule) and
deploy/grafana/dashboard.json: valid for promtool, the two alert files equal, and every
metric and label they name one that the code exports (read from a real API's `/metrics`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import yaml
from prometheus_client import REGISTRY
from sqlalchemy import update

from worker.metrics import record_beat_tick
from worker.store.models import Contact

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules.yml"
ALERTS = ROOT / "deploy/prometheus/alerts.yaml"
DASHBOARD = ROOT / "deploy/grafana/dashboard.json"
# What the issue asks the alerts to catch, by alert name.
REQUIRED_ALERTS = {
    "ProvisionerContactsStuck",  # stuck contacts
    "ProvisionerFailedRateHigh",  # failed rate
    "ProvisionerContactPendingTooLong",  # oldest pending age
    "ProvisionerQueueDeep",  # queue depth per queue
    "ProvisionerWebhookBacklog",  # webhook backlog
    "ProvisionerProviderCredentialsRefused",  # refused provider credentials
    "ProvisionerNoLiveWorker",  # no live worker
    "ProvisionerBeatSilent",  # beat silent
}

# --- PromQL: the metrics and labels an expression names -------------------------------------

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) that a PromQL expression refers to."""
    labels: set[str] = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    for match in GROUPING.finditer(text):
        labels |= {label.strip() for label in match.group(2).split(",") if label.strip()}
    text = GROUPING.sub(" ", text)
    metrics: set[str] = set()
    for match in SELECTOR.finditer(text):
        if match.group(1):
            metrics.add(match.group(1))
        labels |= {m.group(1) for m in MATCHER.finditer(match.group(2))}
    text = SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    for match in IDENT.finditer(text):
        word = match.group(0)
        following = text[match.end():].lstrip()
        if word.lower() in KEYWORDS or following.startswith("("):
            continue  # an operator, or a function or aggregation
        if re.fullmatch(r"\d.*", word):
            continue
        metrics.add(word)
    return metrics, labels


def test_the_promql_reader_finds_metrics_and_labels():
    metrics, labels = names_in(
        'sum by (le, route) (rate(a_b_bucket{method="POST", x=~"a|b"}[5m])) / on(route) '
        'group_left c_total or absent(d) > 0.1 and time() - max(e_seconds) > 120')
    assert metrics == {"a_b_bucket", "c_total", "d", "e_seconds"}
    assert labels == {"le", "route", "method", "x"}


# --- what the code exports --------------------------------------------------------------------

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count")}


@pytest.fixture
def settings(make_settings, sandbox):
    """The API's providers are the sandbox, so that /readyz's check reaches a verdict."""
    return make_settings(sandbox_url=sandbox.url)


@pytest.fixture
def exported(client, tenant, db, settings) -> dict[str, set[str]]:
    """Every sample name a real API's `/metrics` exports (the worker's registry is the same
    module's), with the label names each carries. Beat has ticked, one contact is stuck and
    the providers have judged the credentials, so that every family read at scrape time is in
    the scrape."""
    record_beat_tick(redis.Redis.from_url(settings.redis_url), 1_800_000_000.0)
    client.get("/readyz")  # starts the providers' check; its verdicts feed a gauge
    deadline = time.monotonic() + 30
    while "provisioner_provider_credentials_ok{" not in client.get("/metrics").text:
        assert time.monotonic() < deadline, "the providers' check gave no verdict"
        time.sleep(0.1)
    posted = client.post(f"/v0/assistant/{tenant.assistant_ids[0]}/contact",
                         json={"contact_type": "phone"}, headers=tenant.headers)
    assert posted.status_code == 202
    with db.write() as session:
        session.execute(update(Contact).values(stuck_reason="credentials_refused",
                                               stuck_since=datetime.now(UTC)))
    text = client.get("/metrics").text
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            base = name.removesuffix("_total") if kind == "counter" else name
            for suffix in SUFFIXES.get(kind, ("",)):
                found.setdefault(base + suffix, set())
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            found.setdefault(name.split(" ")[0], set()).update(
                m.group(1) for m in re.finditer(r'([a-zA-Z_]\w*)="', rest))
    # Label names of labelled metrics with no sample yet (e.g. provider credentials).
    for name in list(found):
        collector = REGISTRY._names_to_collectors.get(name)
        found[name] |= set(getattr(collector, "_labelnames", ()))
        if name.endswith("_bucket"):
            found[name].add("le")
    return {name: labels for name, labels in found.items() if name.startswith("provisioner_")}


def check_expression(expr: str, exported: dict[str, set[str]], where: str) -> None:
    metrics, labels = names_in(expr)
    assert metrics, f"{where}: no metric in {expr!r}"
    unknown = metrics - exported.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not exported (exported: {sorted(exported)})"
    known_labels = set().union(*(exported[m] for m in metrics))
    assert labels <= known_labels, f"{where}: labels {sorted(labels - known_labels)} unknown"


# --- the alert rules --------------------------------------------------------------------------


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alerts() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def test_the_prometheus_rule_holds_the_rules_files_groups():
    document = yaml.safe_load(ALERTS.read_text())
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["name"]
    assert document["spec"]["groups"] == rule_groups()


def test_every_asked_for_alert_is_there_and_says_what_it_catches_and_what_to_do():
    rules = alerts()
    assert REQUIRED_ALERTS <= {rule["alert"] for rule in rules}
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule.get("for"), rule["alert"]
        assert len(rule["annotations"]["summary"]) > 10, rule["alert"]
        assert len(rule["annotations"]["description"]) > 100, rule["alert"]


def test_every_alert_names_only_exported_metrics_and_labels(exported):
    for rule in alerts():
        check_expression(rule["expr"], exported, rule["alert"])


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is missing: install Debian's `prometheus` package (.ci/run does)")
    pytest.skip("promtool not installed (Debian package `prometheus`); CI fails without it")


def test_promtool_accepts_both_alert_files(tmp_path):
    tool = promtool()
    spec = tmp_path / "prometheus-rule-spec.yml"
    spec.write_text(yaml.safe_dump(yaml.safe_load(ALERTS.read_text())["spec"]))
    for path in (RULES, spec):
        done = subprocess.run([tool, "check", "rules", str(path)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"SUCCESS: {len(alerts())} rules found" in done.stdout, done.stdout


def test_the_alerts_fire_on_the_series_they_are_written_for(tmp_path):
    """promtool's rule unit tests (tests/devstack/alerts.test.yml): synthetic series for each
    alert, and the alerts that must (and must not) fire on them. The rules are copied without
    their annotations, which promtool would otherwise compare as rendered text."""
    tool = promtool()
    bare = {"groups": [{**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"}
                                           for rule in group["rules"]]}
                       for group in rule_groups()]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(bare))
    cases = Path(__file__).with_name("alerts.test.yml")
    shutil.copy(cases, tmp_path / "alerts.test.yml")
    done = subprocess.run([tool, "test", "rules", "alerts.test.yml"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {case["alertname"] for test in yaml.safe_load(cases.read_text())["tests"]
              for case in test["alert_rule_test"]}
    assert {rule["alert"] for rule in alerts()} <= tested


# --- the dashboard ----------------------------------------------------------------------------


def test_every_dashboard_panel_queries_exported_metrics(exported):
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    shown = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            check_expression(target["expr"], exported, panel["title"])
            shown |= names_in(target["expr"])[0]
    # Every series an alert is written on can be looked at on the dashboard.
    alerted = set().union(*(names_in(rule["expr"])[0] for rule in alerts()))
    assert alerted <= shown, sorted(alerted - shown)
