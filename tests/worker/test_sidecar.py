"""The worker node's sidecar process: started and stopped by its bootstep, gone with its worker, restarted if it
dies, and the place where the invalidation consumer runs (the worker's main process runs no thread of ours)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import celery
import pytest
import redis

from cachewarm import Cache, Settings, publish_invalidation
from cachewarm.errors import CONFIG_ERROR
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM
from cachewarm.worker import sidecar_step
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "python:tests.support.sources_fixture:counted"
ttl = 60
"""


@pytest.fixture
def settings(redis_url: str, write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return Settings.load(redis_url=redis_url, config=write_config(CONFIG), metrics_port=0)


@pytest.fixture
def step(settings: Settings) -> Iterator[sidecar_step.SidecarStep]:
    app = celery.Celery("t", set_as_current=False)
    app.conf.cachewarm_settings = settings
    sidecar_step.install(app)
    assert sidecar_step.SidecarStep in app.steps["worker"]
    made = sidecar_step.SidecarStep(None)
    made.start(SimpleNamespace(app=app, timer=None))
    yield made
    made.stop(None)


def _applied(cache: Cache, key: str) -> Callable[[], bool]:
    return lambda: not cache.exists(key)


def test_the_sidecar_consumes_invalidations_with_the_apps_settings(
        step: sidecar_step.SidecarStep, settings: Settings, redis_client: redis.Redis) -> None:
    # The worker's environment names no Redis: the sidecar must use the app's settings, passed to it.
    assert "CACHEWARM_REDIS_URL" not in os.environ
    cache = Cache(settings=settings)
    cache.set("product:5", {"p": 1})
    publish_invalidation("product:5", redis=redis_client)
    wait_until(_applied(cache, "product:5"), 20, "the invalidation to be applied")
    cache.close()


def test_stop_ends_the_sidecar(step: sidecar_step.SidecarStep, redis_client: redis.Redis) -> None:
    proc = step.process
    assert proc is not None and proc.poll() is None

    def consuming() -> bool:
        try:
            return bool(redis_client.xinfo_consumers(INVALIDATION_STREAM, CONSUMER_GROUP))
        except redis.ResponseError:
            return False

    wait_until(consuming, 20, "the sidecar's consumer to join the group")
    step.stop(None)
    assert proc.returncode == 0  # a clean exit on SIGTERM, not killed by it


def test_a_dead_sidecar_is_started_again(step: sidecar_step.SidecarStep, settings: Settings,
                                         redis_client: redis.Redis) -> None:
    first = step.process
    assert first is not None
    first.kill()
    first.wait(5)
    step.check()
    assert step.process is not None and step.process is not first and step.process.poll() is None
    cache = Cache(settings=settings)
    cache.set("product:6", {"p": 1})
    publish_invalidation("product:6", redis=redis_client)
    wait_until(_applied(cache, "product:6"), 20, "the restarted sidecar to apply the invalidation")
    cache.close()


def test_a_configuration_error_is_not_restarted(redis_url: str, write_config: Callable[[str], Path]) -> None:
    bad = Settings.load(redis_url=redis_url, config=write_config("[keyspaces.product]\npattern = 1\n"), metrics_port=0)
    app = celery.Celery("t", set_as_current=False)
    app.conf.cachewarm_settings = bad
    step = sidecar_step.SidecarStep(None)
    step.start(SimpleNamespace(app=app, timer=None))
    try:
        proc = step.process
        assert proc is not None
        assert proc.wait(60) == CONFIG_ERROR
        step.check()
        assert step.process is None
    finally:
        step.stop(None)


PARENT = """
import sys, time, celery
from types import SimpleNamespace
from cachewarm import Settings
from cachewarm.worker.sidecar_step import SidecarStep
app = celery.Celery("t", set_as_current=False)
app.conf.cachewarm_settings = Settings.load(redis_url=sys.argv[1], config=sys.argv[2], metrics_port=0)
step = SidecarStep(None)
step.start(SimpleNamespace(app=app, timer=None))
print(step.process.pid, flush=True)
time.sleep(60)
"""


def test_the_sidecar_exits_when_its_worker_is_killed(settings: Settings) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, settings.redis_url, str(settings.config)],
                              stdout=subprocess.PIPE, cwd=ROOT)
    assert parent.stdout is not None
    with parent.stdout:
        pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait(5)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:  # an exited child of a dead parent is reaped by init; a zombie is gone
            return f.read().split()[2] == "Z"

    wait_until(gone, 10, "the orphaned sidecar to exit")
