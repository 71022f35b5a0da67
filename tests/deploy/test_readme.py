"""README.md runs as written: the five-minute tour and the FastAPI walkthrough, block by block, in order, on private
servers and ports (tests/support/readme.py says what is substituted and how comments are checked). A block that no
longer does what the text beside it says fails here. (The Django walkthrough: tests/contrib_django/
test_contrib_django_walkthrough.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import readme
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[readme.Run]:
    ports = {theirs: readme.free_port() for theirs in (6379, 8000, 8001, 9808)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHEWARM_", "EXAMPLE_"))}
    # What a reader has without setting anything: the defaults, whose ports are the ones substituted.
    env.update({"CACHEWARM_REDIS_URL": f"redis://127.0.0.1:{ports[6379]}/0",
                "CACHEWARM_METRICS_PORT": str(ports[9808]),
                "PYTHONPATH": str(readme.ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    reader = readme.Run(tmp_path, ports, env)
    try:
        yield reader
    finally:
        reader.stop()


def cli(run: readme.Run, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "cachewarm"), *args], cwd=run.tmp, env=run.env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_tour_runs_as_written(run: readme.Run) -> None:
    body = readme.section("A five-minute tour")
    config, servers, reads, api = readme.blocks(body)
    assert (config.lang, servers.lang, reads.lang, api.lang) == ("toml", "sh", "python", "python")

    # 1. Describe a keyspace; "Check it: `...` prints `ok: ...`".
    run.write_config(config)
    check, claim = re.findall(r"Check it: `([^`]+)` prints `([^`]+)`", body)[0]
    done = subprocess.run(run.substitute(check), shell=True, cwd=run.tmp, env=run.env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and readme.matches(claim, done.stdout), (done.stdout, done.stderr)

    # 2. Start a source and a Redis.
    run.shell(servers)

    # 3. Read through the cache (the comments are checked), then the rest of the API.
    run.python(reads)
    run.python(api)

    # 4. Keep it warm: the command in the text starts the workers; warm, invalidate and status do what they say.
    start = re.findall(r"\*\*4\. Keep it warm:\*\* `([^`]+)`", body)[0]
    run.start(run.substitute(start))
    def workers() -> int:
        done = cli(run, "status", "--json")
        return int(json.loads(done.stdout)["workers"]) if done.returncode == 0 else 0

    wait_until(workers, 60, "cachewarm status to count the running node", interval=0.5)
    warmed = cli(run, "warm", "product:7")
    assert warmed.returncode == 0, warmed.stderr
    cache = run.namespace["cache"]
    assert cache.lookup("product:7").hit
    before = time.time()
    invalidated = cli(run, "invalidate", "product:7")
    assert invalidated.returncode == 0, invalidated.stderr
    # gone, or fetched again since the invalidation (a hot key's refresh): age below the time since, however slow
    # this loop is on a loaded host (an `age < 1` test missed the fresh value's first second once)
    wait_until(lambda: not cache.exists("product:7") or cache.lookup("product:7").age < time.time() - before, 10,
               "the invalidation applied by the running consumer", interval=0.1)
    status = cli(run, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert "product" in json.loads(status.stdout)["keyspaces"]


def test_the_fastapi_walkthrough_runs_as_written(run: readme.Run) -> None:
    body = readme.section("The FastAPI example")
    (walkthrough,) = readme.blocks(body)
    run.env["EXAMPLE_DATABASE_URL"] = f"sqlite:///{run.tmp / 'products.db'}"
    results = run.shell(walkthrough)  # the first two curls are checked against the JSON under them
    outputs = [json.loads(out) for command, out in results if command.startswith("curl") and out.strip()]
    first, second, put = outputs[0], outputs[1], outputs[2]
    assert (first["source"], second["source"]) == ("Database", "Redis Cache")
    assert put["product"]["price"] == 899.0 and put["product"]["version"] == 2
    # "from the database again: price 899.0, version 2" and, as the text says, within the time it gives.
    seconds = float(re.findall(r"within (\d+(?:\.\d+)?) s", body)[0])
    after_put = outputs[3]
    assert after_put["product"]["price"] == 899.0 and after_put["product"]["version"] == 2, after_put
    assert after_put["source"] == "Database"
    assert seconds <= 1
    assert outputs[4] == {"deleted": True}


def test_a_wrong_command_in_a_block_fails_the_run(run: readme.Run) -> None:
    """What the test above would say if the README changed: a block whose command no longer works, or whose output
    no longer matches the comment under it, fails."""
    broken = readme.Block("sh", "curl -s localhost:8001/products/1\n# {\"source\":\"Database\",...}\n")
    server = run.start(f"{sys.executable} -m http.server --bind 127.0.0.1 {run.ports[8001]}")
    readme.wait_for_port(run.ports[8001], server, run.background[-1][1])  # a loaded machine starts it slowly
    with pytest.raises(AssertionError, match="README"):
        run.shell(broken)
    with pytest.raises(AssertionError, match="exited"):
        run.shell(readme.Block("sh", ".venv/bin/cachewarm no-such-command\n"))
    with pytest.raises(AssertionError, match="README"):
        run.python(readme.Block("python", "1 + 1   # 3\n"))
    with pytest.raises(AssertionError, match="raised nothing"):
        run.python(readme.Block("python", "int('1')   # UnknownKeyspace: the text says it raises\n"))
