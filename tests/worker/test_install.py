"""`install(app)` into a team's app, cachewarm's queues and routes, the broker-agnostic queue length, and the
django-celery-beat helper: in-process, no worker started (tests/worker/test_shared_broker.py runs real ones)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from cachewarm import Settings
from cachewarm.demo.redis_server import RedisServer, free_port
from cachewarm.tasks import REFRESH, SCAN, backlog, settings_of
from cachewarm.worker import metrics_step, periodic, queues
from cachewarm.worker.install import install

CONFIG = Path("/nonexistent/cachewarm.toml")


def _settings(**overrides: Any) -> Settings:
    return Settings.load(config=CONFIG, **overrides)


class TeamConfig:
    task_serializer = "pickle"
    accept_content = ["json", "pickle"]
    task_acks_late = False
    worker_prefetch_multiplier = 8
    task_routes: Any = {"*": {"queue": "team"}}
    beat_schedule: Any = {"team.tick": {"task": "team.tick", "schedule": 5.0}}


def _team_app(broker: str = "memory://") -> Celery:
    app = Celery("team", broker=broker, set_as_current=False)
    app.config_from_object(TeamConfig)
    return app


def _queue_of(app: Celery, task: str) -> str:
    route = app.amqp.router.route({}, task, args=(), kwargs={}, task_type=app.tasks.get(task))
    return str(route["queue"].name)


def test_install_sets_only_routes_beat_entry_and_its_own_settings() -> None:
    reference = _team_app()
    reference_conf = dict(reference.conf)  # the team's settings, read without cachewarm
    app = _team_app()
    settings = install(app, _settings(scan_interval=0.5))  # before the configuration is read, as in Django
    app.finalize()
    conf = dict(app.conf)
    changed = {k for k in conf.keys() | reference_conf.keys() if conf.get(k) != reference_conf.get(k)}
    assert changed <= {"task_routes", "beat_schedule", "cachewarm_settings"}, changed
    assert app.conf.task_serializer == "pickle" and app.conf.worker_prefetch_multiplier == 8
    assert settings_of(app) is settings
    assert app.conf.beat_schedule["team.tick"] == TeamConfig.beat_schedule["team.tick"]
    assert app.conf.beat_schedule["cachewarm.scan"] == {
        "task": SCAN, "schedule": 0.5, "options": {"expires": 0.5, "queue": "cachewarm.scan"}}
    # cachewarm's routes come first: the team's catch-all keeps its own tasks, not cachewarm's.
    assert _queue_of(app, REFRESH) == "cachewarm.refresh" and _queue_of(app, SCAN) == "cachewarm.scan"
    assert _queue_of(app, "team.tick") == "team"
    # Each task carries its own options: JSON whatever the app's serializer, acks late for the refresh only.
    refresh, scan = app.tasks[REFRESH], app.tasks[SCAN]
    assert (refresh.serializer, refresh.acks_late, refresh.reject_on_worker_lost) == ("json", True, True)
    assert (scan.serializer, scan.acks_late) == ("json", False)
    # Not shared: another app of the process does not get cachewarm's tasks.
    other = Celery("other", broker="memory://", set_as_current=False)
    other.finalize()
    assert REFRESH not in other.tasks


def test_install_survives_a_later_configuration_and_keeps_an_own_beat_entry() -> None:
    app = Celery("team", broker="memory://", set_as_current=False)
    _ = app.conf.task_serializer  # configuration read already
    install(app, _settings(), beat=True)
    assert "cachewarm.scan" in app.conf.beat_schedule

    class Later:
        beat_schedule: Any = {"cachewarm.scan": {"task": SCAN, "schedule": 60.0}}  # the team's own entry

    app.config_from_object(Later)
    assert app.conf.beat_schedule["cachewarm.scan"]["schedule"] == 60.0
    assert app.conf.task_routes[0] == queues.routes(_settings())


def test_install_without_beat_and_with_fast_reconnect() -> None:
    app = _team_app()
    install(app, _settings(refresh_queue="cw.r", scan_queue="cw.s"), beat=False, fast_reconnect=True)
    assert "cachewarm.scan" not in app.conf.beat_schedule
    assert app.conf.worker_consumer == "cachewarm.worker.consumer:Consumer"
    assert _queue_of(app, REFRESH) == "cw.r" and _queue_of(app, SCAN) == "cw.s"


def test_only_a_node_consuming_the_refresh_queue_runs_cachewarm() -> None:
    app = _team_app()
    install(app, _settings())
    app.finalize()

    def node(*selected: str) -> SimpleNamespace:
        app.amqp.queues.select(list(selected) or None)
        return SimpleNamespace(app=app)

    assert queues.runs_cachewarm(node("cachewarm.refresh", "cachewarm.scan"))
    assert not queues.runs_cachewarm(node("team"))
    assert not queues.runs_cachewarm(SimpleNamespace())
    from cachewarm.worker.celery_app import app as standalone  # its own queues only, no -Q needed

    assert set(standalone.amqp.queues) == {"cachewarm.refresh", "cachewarm.scan"}
    assert queues.runs_cachewarm(SimpleNamespace(app=standalone))


def test_the_start_line_names_what_was_set_and_warns_about_pickle(caplog: pytest.LogCaptureFixture) -> None:
    app = _team_app()
    install(app, _settings())
    app.finalize()
    from celery import signals

    worker = SimpleNamespace(app=app)
    with caplog.at_level(logging.INFO, logger="cachewarm.install"):
        signals.celeryd_after_setup.send(sender="team@host", instance=worker, conf=app.conf)
    lines = [r.getMessage() for r in caplog.records if r.name == "cachewarm.install"]
    assert len(lines) == 1
    assert "set task_routes" in lines[0] and "beat_schedule['cachewarm.scan']" in lines[0]
    assert "accepts ['pickle']" in lines[0]


def test_metrics_take_the_settings_of_the_app_as_the_sidecar_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker of an app built with explicit settings counts under those settings' keyspaces (issue 24: the
    metrics step read the environment's while the sidecar step read the app's)."""
    settings = Settings.load(refresh_queue="team.refresh")
    app = Celery("team")
    install(app, settings)
    given: list[Settings | None] = []
    monkeypatch.setattr(metrics_step, "_settings", None)
    monkeypatch.setattr(metrics_step, "runs_cachewarm", lambda worker: True)
    monkeypatch.setattr(metrics_step.multiprocess, "enable", lambda: None)
    monkeypatch.setattr(metrics_step.multiprocess, "enabled", lambda: True)
    monkeypatch.setattr(metrics_step, "_install_hooks", given.append)
    metrics_step.on_worker_init(sender=SimpleNamespace(app=app))
    metrics_step.on_child_init()  # a pool child: the settings its main process had
    assert given == [settings, settings]


def test_queue_length_is_read_from_the_broker_and_counts_only_the_refresh_queue(redis_server: RedisServer) -> None:
    broker = redis_server.url(1)
    app = _team_app(broker)
    settings = install(app, _settings(refresh_batch_size=10))
    app.finalize()
    import redis

    redis.Redis.from_url(broker).flushdb()
    try:
        assert backlog.queue_length(app, settings.refresh_queue).read() == 0  # an empty Redis queue is no key
        for n in range(3):
            app.tasks[REFRESH].apply_async(args=[[f"k{n}"]])
        app.send_task("team.tick")                     # the team's queue: not counted
        assert backlog.queue_length(app, settings.refresh_queue).read() == 3
        assert backlog.room(app, settings) == (backlog.MAX_QUEUED_BATCHES - 3) * 10
    finally:
        backlog.queue_length(app, settings.refresh_queue).close()
        redis.Redis.from_url(broker).flushdb()


def test_an_unreadable_queue_length_gives_a_bounded_room_quickly() -> None:
    app = Celery("team", broker=f"redis://127.0.0.1:{free_port()}/1", set_as_current=False)
    settings = install(app, _settings(refresh_batch_size=10))
    started = time.monotonic()
    assert backlog.room(app, settings) == backlog.UNKNOWN_ROOM_BATCHES * 10
    assert time.monotonic() - started < 3 * backlog.TIMEOUT
    assert backlog.queue_length(app, settings.refresh_queue).pid == os.getpid()


class _Manager:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def get_or_create(self, **fields: Any) -> tuple[Any, bool]:
        key = repr(sorted(fields.items()))
        created = key not in self.rows
        self.rows.setdefault(key, fields)
        return SimpleNamespace(**fields), created

    def update_or_create(self, name: str, defaults: dict[str, Any]) -> tuple[Any, bool]:
        created = name not in self.rows
        self.rows[name] = {"name": name, **defaults}
        return SimpleNamespace(**self.rows[name]), created


def test_django_celery_beat_row_is_created_once_without_django() -> None:
    periodic_task, interval = SimpleNamespace(objects=_Manager()), SimpleNamespace(objects=_Manager())
    for _ in range(2):
        task = periodic.create_scan_task(periodic_task, interval, _settings(scan_interval=0.25))
    assert len(periodic_task.objects.rows) == 1 and len(interval.objects.rows) == 1
    assert (task.name, task.task, task.queue, task.expire_seconds) == ("cachewarm.scan", SCAN, "cachewarm.scan", 1)
    assert (task.interval.every, task.interval.period) == (1, "seconds")
