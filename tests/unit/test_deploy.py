"""The operations kit: Prometheus rules and config, the Grafana dashboard and the docker-compose stack.

promtool and docker-compose are required (the Makefile installs them); a missing one fails the test with the
reason instead of skipping it.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# Every metric cachewarm exports. The dashboard and the rules may use only these (histograms through their
# _bucket/_sum/_count series); a test of the live endpoint asserts it exports exactly these.
METRIC_NAMES = (
    "cachewarm_cache_hits_total",
    "cachewarm_cache_misses_total",
    "cachewarm_cache_local_hits_total",
    "cachewarm_refreshes_total",
    "cachewarm_source_request_duration_seconds",
    "cachewarm_invalidations_total",
    "cachewarm_invalidation_lag_seconds",
    "cachewarm_hot_keys",
    "cachewarm_refresh_late_total",
    "cachewarm_refresh_wasted_total",
    "cachewarm_served_value_age_seconds",
    "cachewarm_stale_served_total",
    "cachewarm_refresh_backlog_keys",
    "cachewarm_refresh_backlog_seconds",
    "cachewarm_refresh_left_out_total",
    "cachewarm_refresh_left_out_keys",
    "cachewarm_invalidation_pending",
    "cachewarm_invalidation_dead_letters",
    "cachewarm_source_errors_total",
    "cachewarm_redis_errors_total",
    "cachewarm_workers",
    "cachewarm_invalidation_gaps_total",
    "cachewarm_audit_checks_total",
    "cachewarm_audit_inconsistencies_total",
    "cachewarm_audit_repairs_total",
    "cachewarm_audit_staleness_seconds",
)
HISTOGRAMS = (
    "cachewarm_source_request_duration_seconds",
    "cachewarm_invalidation_lag_seconds",
    "cachewarm_served_value_age_seconds",
    "cachewarm_audit_staleness_seconds",
)
SERIES_NAMES = frozenset(
    [name for name in METRIC_NAMES if name not in HISTOGRAMS]
    + [name + suffix for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")]
)

ALERTS = (
    "CachewarmHitRatioLow",
    "CachewarmRefreshBacklogGrowing",
    "CachewarmSourceErrorRateHigh",
    "CachewarmInvalidationPendingGrowing",
    "CachewarmDeadLettersGrowing",
    "CachewarmScrapeDown",
    "CachewarmStaleValuesFound",
)

# Dashboard panel title -> series its queries must read.
PANELS = {
    "Hit ratio per keyspace": ("cachewarm_cache_hits_total", "cachewarm_cache_misses_total"),
    "Served value age": ("cachewarm_served_value_age_seconds_bucket",),
    "Refresh rate and outcomes": ("cachewarm_refreshes_total",),
    "Source latency": ("cachewarm_source_request_duration_seconds_bucket",),
    "Invalidation lag": ("cachewarm_invalidation_lag_seconds_bucket",),
    "Refresh backlog": ("cachewarm_refresh_backlog_keys", "cachewarm_refresh_backlog_seconds"),
    "Hot keys": ("cachewarm_hot_keys",),
    "Consistency (audits)": ("cachewarm_audit_inconsistencies_total", "cachewarm_audit_repairs_total",
                             "cachewarm_audit_checks_total"),
    "Audit checks and staleness": ("cachewarm_audit_checks_total", "cachewarm_audit_staleness_seconds_bucket"),
}

SERVICES = {"cache", "broker", "source", "worker", "beat", "prometheus", "grafana"}
# The same commands the end-to-end tests run.
WORKER_COMMAND = "celery -A cachewarm.worker worker --loglevel=INFO --concurrency=4"
BEAT_SCHEDULE = "/var/lib/cachewarm/celerybeat-schedule"
BEAT_COMMAND = f"celery -A cachewarm.worker beat --loglevel=INFO --schedule={BEAT_SCHEDULE}"
APP_ENV = {
    "CACHEWARM_REDIS_URL": "redis://cache:6379/0",
    "CACHEWARM_BROKER_URL": "redis://broker:6379/0",
    "CACHEWARM_CONFIG": "/app/deploy/cachewarm.toml",
}

DEBIAN_PACKAGES = {"promtool": "prometheus", "docker-compose": "docker-compose"}

METRIC_RE = re.compile(r"\bcachewarm_[a-z0-9_]*[a-z0-9]")
RECORDED_RE = re.compile(r"\bcachewarm:[a-z0-9_:]*[a-z0-9_]")


def run(tool: str, *args: str, cwd: Path = ROOT) -> str:
    """Runs a required tool and returns its stdout; fails the test when the tool is missing or says no."""
    if shutil.which(tool) is None:
        package = DEBIAN_PACKAGES[tool]
        pytest.fail(f"{tool} is not installed; `make test` installs it (Debian: {package})", pytrace=False)
    proc = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    command = " ".join([tool, *args])
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@functools.cache
def compose_config() -> str:
    """The compose file as docker-compose resolves it: anchors merged, paths absolute."""
    return run("docker-compose", "-f", "docker-compose.yml", "config")


def unknown_series(text: str) -> set[str]:
    return set(METRIC_RE.findall(text)) - SERIES_NAMES


def dashboard() -> dict[str, object]:
    data = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    assert isinstance(data, dict)
    return data


def panel_exprs() -> dict[str, list[str]]:
    panels = dashboard()["panels"]
    assert isinstance(panels, list)
    return {panel["title"]: [target["expr"] for target in panel["targets"]] for panel in panels}


def indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def compose_service(config: str, name: str) -> list[str]:
    """The lines of one service in `docker-compose config` output (block YAML, services indented by two)."""
    lines = config.splitlines()
    start = lines.index(f"  {name}:") + 1
    block = []
    for line in lines[start:]:
        if line.strip() and indent(line) <= 2:
            break
        block.append(line)
    return block


def compose_value(block: list[str], key: str) -> str:
    """A scalar `key: value` of a service, rejoining the lines that docker-compose folds at 80 columns."""
    for i, line in enumerate(block):
        if line.strip().startswith(key + ":"):
            parts = [line.split(":", 1)[1].strip()]
            parts += [nxt.strip() for nxt in _continuation(block[i + 1:], indent(line))]
            return " ".join(parts)
    raise AssertionError(f"no {key!r} in service block:\n" + "\n".join(block))


def _continuation(lines: list[str], key_indent: int) -> list[str]:
    out = []
    for line in lines:
        if indent(line) <= key_indent:
            break
        out.append(line)
    return out


def rule_exprs(rules: str) -> list[str]:
    """The `expr:` of every rule, folded block scalars (`expr: >`) included."""
    lines = rules.splitlines()
    exprs = []
    for i, line in enumerate(lines):
        if line.strip().startswith("expr:"):
            value = line.split(":", 1)[1].strip()
            parts = [] if value in (">", ">-", "|", "|-") else [value]
            parts += [nxt.strip() for nxt in _continuation(lines[i + 1:], indent(line))]
            exprs.append(" ".join(parts))
    return exprs


def test_rules_are_valid() -> None:
    out = run("promtool", "check", "rules", "rules.yml", cwd=DEPLOY)
    assert "SUCCESS" in out


def test_rules_unit_tests_pass() -> None:
    run("promtool", "test", "rules", "rules_test.yml", cwd=DEPLOY)


def test_every_alert_exists_and_is_unit_tested() -> None:
    rules = (DEPLOY / "rules.yml").read_text()
    tests = (DEPLOY / "rules_test.yml").read_text()
    assert set(re.findall(r"^\s*- alert: (\w+)", rules, re.M)) == set(ALERTS)
    tested = re.findall(r"^\s*alertname: (\w+)", tests, re.M)
    for alert in ALERTS:
        assert tested.count(alert) >= 2, f"{alert} needs a firing and a non-firing case in rules_test.yml"


def test_rules_use_only_exported_metrics_and_defined_recordings() -> None:
    rules = (DEPLOY / "rules.yml").read_text()
    assert unknown_series(rules) == set()  # annotations included: they name metrics for the operator
    recorded = set(re.findall(r"^\s*- record: (\S+)", rules, re.M))
    assert set(RECORDED_RE.findall("\n".join(rule_exprs(rules)))) <= recorded
    assert "cachewarm:hit_ratio:rate5m" in recorded


def test_prometheus_config_is_valid() -> None:
    # check config also checks the rule files, resolved relative to the config file.
    out = run("promtool", "check", "config", "deploy/prometheus.yml")
    assert "1 rule files found" in out
    config = (DEPLOY / "prometheus.yml").read_text()
    assert re.search(r"job_name: cachewarm\n\s+metrics_path: /metrics\n", config)
    assert "port: 9808" in config
    assert re.search(r"rule_files:\n\s+- rules\.yml", config)


def test_dashboard_has_the_panels() -> None:
    exprs = panel_exprs()
    for title, series in PANELS.items():
        assert title in exprs, f"dashboard has no panel {title!r}"
        joined = "\n".join(exprs[title])
        for name in series:
            assert name in joined, f"panel {title!r} does not read {name}"
    for title in ("Served value age", "Source latency", "Invalidation lag"):
        assert all(expr.startswith("histogram_quantile(") for expr in exprs[title])


def test_dashboard_uses_only_exported_metrics() -> None:
    exprs = [expr for panel in panel_exprs().values() for expr in panel]
    assert unknown_series("\n".join(exprs)) == set()
    assert RECORDED_RE.findall("\n".join(exprs)) == [], "the dashboard must work without the recording rules"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, is valid PromQL (checked as a recording rule)."""
    exprs = [expr for panel in panel_exprs().values() for expr in panel]
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        promql = expr.replace("$__rate_interval", "5m").replace("$keyspace", ".*")
        lines += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(promql)}"]
    (tmp_path / "dashboard_rules.yml").write_text("\n".join(lines) + "\n")
    out = run("promtool", "check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert f"SUCCESS: {len(exprs)} rules found" in out


def test_grafana_provisioning_matches_the_dashboard() -> None:
    datasource = (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    uid = re.search(r"^\s+uid: (\S+)$", datasource, re.M)
    assert uid, "the provisioned data source needs a fixed uid"
    assert "url: http://prometheus:9090" in datasource
    uids = set(re.findall(r'"uid": "([^"]+)"', (DEPLOY / "grafana" / "dashboard.json").read_text()))
    assert uids == {uid.group(1), dashboard()["uid"]}

    provider = (DEPLOY / "grafana" / "provisioning" / "dashboards" / "cachewarm.yml").read_text()
    path = re.search(r"^\s+path: (\S+)$", provider, re.M)
    assert path
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"./deploy/grafana/dashboard.json:{path.group(1)}/" in compose
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning" in compose


def test_compose_file_is_valid() -> None:
    run("docker-compose", "-f", "docker-compose.yml", "config", "--quiet")
    services = run("docker-compose", "-f", "docker-compose.yml", "config", "--services").split()
    assert set(services) == SERVICES


def test_compose_runs_the_documented_processes() -> None:
    config = compose_config()
    worker = compose_service(config, "worker")
    beat = compose_service(config, "beat")
    assert compose_value(worker, "command") == WORKER_COMMAND
    assert compose_value(beat, "command") == BEAT_COMMAND
    for block in (worker, beat):
        for name, value in APP_ENV.items():
            assert compose_value(block, name) == value
    assert compose_value(worker, "CACHEWARM_METRICS_HOST") == "0.0.0.0"
    assert compose_value(compose_service(config, "source"), "command") == (
        "python -m cachewarm.demo.source --host 0.0.0.0 --port 8000 --latency 0.05")


def test_compose_files_carry_no_obsolete_version_key() -> None:
    for name in ("docker-compose.yml", "docker-compose.cluster.yml"):
        assert not re.search(r"^version:", (ROOT / name).read_text(), re.M), name


def _depends_on(block: list[str]) -> dict[str, str]:
    """A service's `depends_on` as docker-compose resolves it: {service: condition}."""
    lines = [line.strip() for line in block]
    if "depends_on:" not in lines:
        return {}
    start = lines.index("depends_on:")
    found: dict[str, str] = {}
    current = ""
    for raw, line in zip(block[start + 1:], lines[start + 1:], strict=True):
        if indent(raw) <= indent(block[start]):
            break
        if line.startswith("condition:"):
            found[current] = line.split(":", 1)[1].strip()
        elif line.endswith(":"):
            current = line[:-1]
            found[current] = ""
    return found


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.cluster.yml")])
def test_compose_services_wait_for_what_they_need_to_answer(files: tuple[str, ...]) -> None:
    """Every dependency names a condition; a dependency with a healthcheck is waited for until healthy (a bare
    list only waits for the container to exist: the worker then starts against a Redis still loading)."""
    config = run("docker-compose", *(arg for f in files for arg in ("-f", f)), "config")
    services = run("docker-compose", *(arg for f in files for arg in ("-f", f)), "config", "--services").split()
    healthy = {name for name in services if "healthcheck:" in [line.strip() for line in compose_service(config, name)]}
    assert {"cache", "broker", "source"} <= healthy
    waits = {name: _depends_on(compose_service(config, name)) for name in services}
    for name, needs in waits.items():
        for needed, condition in needs.items():
            assert condition, f"{name} depends on {needed} without a condition"
            if needed in healthy:
                assert condition == "service_healthy", f"{name} starts before {needed} is healthy ({condition})"
    for app in ("worker", "beat"):
        assert {"cache", "broker"} <= waits[app].keys()


def test_compose_processes_write_only_where_their_user_may() -> None:
    """The image's processes run as the `cachewarm` user, whose home is the one directory the image gives it; beat
    (Celery writes its schedule file into the working directory unless told otherwise, and /app is root's) keeps its
    schedule there, on a volume. What no daemon here can show (the volume's first mount copying the directory's
    owner) is Docker's documented behaviour for named volumes."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user == ["cachewarm"]
    useradd = re.search(r"useradd .*--home-dir (\S+) --create-home cachewarm", dockerfile)
    assert useradd, "the cachewarm user needs a home it owns"
    home = useradd[1]
    assert BEAT_SCHEDULE.rsplit("/", 1)[0] == home
    config = compose_config()
    beat = compose_service(config, "beat")
    assert compose_value(beat, "command") == BEAT_COMMAND
    assert any(line.strip() == f"target: {home}" or line.strip().endswith(f":{home}:rw") or
               line.strip().endswith(f":{home}") for line in beat), "\n".join(beat)
    for name in ("worker", "source"):
        command = compose_value(compose_service(config, name), "command")
        assert "--schedule" not in command and " beat" not in command  # only beat writes a schedule


def test_compose_redis_policies() -> None:
    config = compose_config()
    cache = compose_value(compose_service(config, "cache"), "command")
    broker = compose_value(compose_service(config, "broker"), "command")
    assert re.search(r"--maxmemory-policy (allkeys|volatile)-lfu\b", cache), cache
    assert "--maxmemory 256mb" in cache
    # Celery loses tasks when the broker evicts its keys.
    assert re.search(r"--maxmemory-policy noeviction\b", broker), broker
    for service in ("cache", "broker"):
        assert compose_value(compose_service(config, service), "image").startswith("redis:7")


def test_compose_prometheus_mounts_rules_next_to_config() -> None:
    config = compose_config()
    volumes = "\n".join(compose_service(config, "prometheus"))
    assert "/deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert "/deploy/rules.yml:/etc/prometheus/rules.yml:ro" in volumes


def test_image_config_is_the_deploy_keyspace_file() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert f"COPY deploy/cachewarm.toml {APP_ENV['CACHEWARM_CONFIG']}" in dockerfile
    keyspaces = tomllib.loads((DEPLOY / "cachewarm.toml").read_text())["keyspaces"]
    assert keyspaces == {"product": {
        "pattern": "product:{id}",
        "source": "http://source:8000/products/{id}",
        "ttl": 60,
        "refresh_ahead": 15,
        "tags": ["products"],
        "version_field": "version",  # the auditor compares versions: the demo's bodies hold a fetch time
    }}
