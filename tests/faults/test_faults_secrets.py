"""Scenario 9: a password in the Redis URL never shows up in any command's output, log, /metrics or in Redis.

Every command runs with `CACHEWARM_REDIS_URL=redis://:PASSWORD@...` against a server that requires it, in its
successful form and in its failing forms (wrong password, nothing listening, malformed URL); `cachewarm run`
runs at DEBUG log level while its /metrics endpoint is scraped. Nothing may print the password.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from cachewarm.demo.redis_server import RedisServer, free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]  # some 35 CLI runs: slow on a loaded machine

PASSWORD = "Pw4Secrets-q7Zx9"
WRONG = "Wrong-Pw-k2Lm5"
CLI = [sys.executable, "-c", "from cachewarm.cli import main; main()"]
PARALLEL = 4  # CLI processes at once: each spends its second or so importing, mostly on CPU


@pytest.fixture
def locked_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url())
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        yield server


def _env(tmp: Path, config: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    env.update(CACHEWARM_REDIS_URL=url, CACHEWARM_CONFIG=str(config), PYTHONPATH=str(Path.cwd()),
               CACHEWARM_METRICS_PORT=str(free_port()), **extra)
    return env


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[int, str]:
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60, input=stdin)
    return done.returncode, done.stdout + done.stderr


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to `cachewarm run` by its own pid; the group killed if it does not exit."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _run_commands(config: Path, port: int, tmp_path: Path, good: dict[str, str], outputs: dict[str, str]) -> None:
    """Every command in its successful form and its failing forms, each in its own process (several at once)."""
    ok_commands = [["check-config"], ["warm", "item:1", "item:2"], ["status"], ["status", "--json"],
                   ["invalidate", "item:1"], ["invalidate", "--tag", "items"], ["invalidate", "item:1\x01"]]
    failing = {
        "wrong password": _env(tmp_path, config, f"redis://:{WRONG}@127.0.0.1:{port}/0"),
        "user and wrong password": _env(tmp_path, config, f"redis://admin:{WRONG}@127.0.0.1:{port}/0"),
        "nothing listening": _env(tmp_path, config, f"redis://:{WRONG}@127.0.0.1:{free_port()}/0"),
        "bad port": _env(tmp_path, config, f"redis://:{WRONG}@127.0.0.1:notaport/0"),
        "bad scheme": _env(tmp_path, config, f"http://:{WRONG}@127.0.0.1:{port}/0"),
        "bad broker": _env(tmp_path, config, f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
                           CACHEWARM_BROKER_URL=f"redis://:{WRONG}@127.0.0.1:notaport/1"),
    }
    cases = [("ok " + " ".join(args), args, good) for args in ok_commands]
    cases += [(f"{what}: {' '.join(args)}", args, env) for what, env in failing.items()
              for args in (["check-config"], ["status"], ["invalidate", "item:1"], ["warm", "item:1"])]
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda case: _run(case[1], case[2]), cases))
    for (name, args, _), (code, out) in zip(cases, results, strict=True):
        outputs[name] = out
        if name.startswith("ok ") and args != ["invalidate", "item:1\x01"]:
            assert code == 0, (args, out)
        if not name.startswith("ok "):
            assert "Traceback" not in out, (name, out[-2000:])


def test_no_command_prints_the_redis_password(locked_server: RedisServer, tmp_path: Path,
                                              write_config: Callable[[str], Path]) -> None:
    config = write_config("""
        [keyspaces.item]
        pattern = "item:{id}"
        source = "python:tests.faults._support:item_source"
        ttl = 30
        refresh_ahead = 10
        refresh_worth = 0  # every key above the hot threshold (the policy these reads were written for)
        tags = ["items"]
    """)
    port = locked_server.port
    good = _env(tmp_path, config, f"redis://:{PASSWORD}@127.0.0.1:{port}/0", CACHEWARM_SCAN_INTERVAL="0.5")
    outputs: dict[str, str] = {}
    # `cachewarm run` at DEBUG (scraped below, once it is up) boots while the other commands run.
    env = dict(good)
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([*CLI, "run", "-c", "1", "-l", "DEBUG"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _run_commands(config, port, tmp_path, good, outputs)
    except BaseException:
        _stop(proc)
        raise

    def run_log() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    def scraped() -> str | None:
        assert proc.poll() is None, f"`cachewarm run` exited with {proc.returncode}:\n{run_log()}"
        response = httpx.get(f"http://127.0.0.1:{env['CACHEWARM_METRICS_PORT']}/metrics", timeout=2)
        return response.text if response.status_code == 200 and "cachewarm_workers" in response.text else None

    try:
        metrics = wait_until(scraped, 40, "the metrics of `cachewarm run`", details=run_log, interval=0.3,
                             ignore=(httpx.HTTPError,))
        _, out = _run(["warm", "item:3"], good)
        outputs["warm while running"] = out
        time.sleep(2)
        metrics += httpx.get(f"http://127.0.0.1:{env['CACHEWARM_METRICS_PORT']}/metrics", timeout=5).text
    finally:
        _stop(proc)
    outputs["run log"] = log_path.read_text(errors="replace")
    outputs["/metrics"] = metrics
    assert metrics, outputs["run log"][-3000:]
    assert "celery@" in outputs["run log"] or "ready" in outputs["run log"].lower(), outputs["run log"][-3000:]

    # What cachewarm wrote into Redis (heartbeats, stats, stream entries, the broker's messages).
    admin = redis.Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    stored: list[bytes] = []
    for db in (0, 1):
        admin.execute_command("SELECT", db)
        for key in admin.scan_iter(count=1000):
            kind = admin.type(key)
            stored.append(key)
            if kind == b"string":
                stored.append(admin.get(key) or b"")
            elif kind == b"hash":
                stored.extend(b"%s=%s" % kv for kv in admin.hgetall(key).items())
            elif kind == b"list":
                stored.extend(admin.lrange(key, 0, -1))
            elif kind == b"stream":
                stored.extend(repr(e).encode() for e in admin.xrange(key))
    admin.close()
    outputs["redis contents"] = b"\n".join(stored).decode(errors="replace")

    leaks = {name: text.count(secret) for name, text in outputs.items() for secret in (PASSWORD, WRONG)
             if secret in text}
    assert not leaks, {name: outputs[name][max(0, outputs[name].find(PASSWORD) - 300):][:800] for name in leaks}
    checked = sum(len(t) for t in outputs.values())
    print(f"\n{len(outputs)} outputs checked ({checked} characters): password found 0 times")


def test_warm_with_a_wrong_password_fails_in_one_line(locked_server: RedisServer, tmp_path: Path,
                                                      write_config: Callable[[str], Path]) -> None:
    config = write_config("""
        [keyspaces.item]
        pattern = "item:{id}"
        source = "python:tests.faults._support:item_source"
        ttl = 30
    """)
    code, out = _run(["warm", "item:1"], _env(tmp_path, config, f"redis://:{WRONG}@127.0.0.1:{locked_server.port}/0"))
    assert WRONG not in out
    assert code != 0 and "Traceback" not in out and len(out.strip().splitlines()) <= 2, out[-1500:]
