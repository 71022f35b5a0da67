"""The walkthrough of examples/django_project/README.md, followed as written: each line of its ``sh`` block run
by bash in order (a line ending in ``&`` in the background), with real processes (redis-server, ``manage.py
cachewarm run``, ``runserver``, curl). What differs from a reader's terminal: free ports instead of 6379 and
8002, this interpreter for ``../../.venv/bin/python``, the database in a temporary file (SHOP_DATABASE), the
metrics endpoint on a free port, and waiting as a reader would: for the server to answer, and for the cachewarm
node to run (its invalidation consumer registered) before the PUT. Then the new price must be what a GET answers
within a second of the PUT's answer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cachewarm.demo.redis_server import free_port
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM
from tests.support.processes import Processes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
REPO = PROJECT.parents[1]
NEW_PRICE_WITHIN = 1.0  # seconds after the PUT's answer


def walkthrough() -> list[str]:
    """The command lines of the README's ``sh`` block under "The example shop", comments removed."""
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## The example shop"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "no sh block in the README's example shop section"
    lines = [re.sub(r"\s{2,}#.*$", "", line).strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def consumers(client: redis.Redis) -> int:
    try:
        return len(client.xinfo_consumers(INVALIDATION_STREAM, CONSUMER_GROUP))
    except redis.ResponseError:  # no stream or group yet
        return 0


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """The background lines' processes (the test stops `cachewarm run` first, see there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHEWARM_", "SHOP_", "DJANGO_", "CELERY_"))}
    processes = Processes(tmp_path, env)
    try:
        yield processes
    finally:
        processes.stop()


def test_the_walkthrough_shows_a_saved_price_within_a_second(processes: Processes, tmp_path: Path) -> None:
    redis_port, http_port = free_port(), free_port()
    env = processes.env
    env.update(SHOP_DATABASE=str(tmp_path / "db.sqlite3"), CACHEWARM_METRICS_PORT="0",
               CACHEWARM_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
               CACHEWARM_BROKER_URL=f"redis://127.0.0.1:{redis_port}/1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    client = redis.Redis(port=redis_port)
    cwd, answers, put_answered = REPO, [], 0.0
    node: subprocess.Popen[bytes] | None = None
    try:
        for line in walkthrough():
            command = (line.replace("../../.venv/bin/python", sys.executable).replace("6379", str(redis_port))
                       .replace("8002", str(http_port)))
            if command.startswith("cd "):
                cwd = (cwd / command[3:]).resolve()
            elif command.endswith("&"):
                with open(tmp_path / f"background-{len(processes.procs)}.log", "wb") as log:
                    proc = subprocess.Popen(["bash", "-c", f"exec {command.rstrip('&').strip()}"], cwd=cwd,
                                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                processes.procs.append(proc)
                if command.startswith("redis-server"):
                    wait_until(client.ping, 10, "redis-server", ignore=(redis.ConnectionError,))
                if " cachewarm run" in command:  # as a reader waits for it: its consumer has registered
                    node = proc
                    wait_until(lambda: consumers(client), 60, "the cachewarm node's consumer",
                               details=processes.logs)
            elif command.startswith("curl"):
                if answers and "-X PUT" not in command and put_answered:  # the read after the save: polled
                    deadline = put_answered + NEW_PRICE_WITHIN
                    price = None
                    while price != "12.50" and time.monotonic() < deadline:
                        price = json.loads(run(command, cwd, env, retry=False))["product"]["price"]
                    answers.append(f"{price} after {time.monotonic() - put_answered:.2f} s")
                    assert price == "12.50", f"old price {price} a second after the PUT: {answers}"
                    continue
                answers.append(run(command, cwd, env, retry=not answers))
                if "-X PUT" in command:
                    put_answered = time.monotonic()
                    assert json.loads(answers[-1])["product"]["price"] == "12.50", answers
                else:
                    assert json.loads(answers[-1])["product"]["price"] == "9.90", answers
            else:
                run(command, cwd, env, retry=False)
    except BaseException:
        print(processes.logs())  # shown with the failure
        raise
    finally:
        client.close()
        if node is not None:  # SIGTERM, as a reader's `kill %1`: `run` stops its Celery worker, which runs in a
            processes.kill(node, signal.SIGTERM)  # session of its own (a SIGKILL of `run` would leave it behind)
    assert put_answered and answers[-1].startswith("12.50"), answers


def run(command: str, cwd: Path, env: dict[str, str], *, retry: bool) -> str:
    """A foreground line; with `retry`, again while curl cannot connect (the server is starting)."""
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode == 7 and retry and time.monotonic() < deadline:  # curl: connection refused
            time.sleep(0.2)
            continue
        assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout
