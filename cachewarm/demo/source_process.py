"""The demo source in a child process (`python -m cachewarm.demo.source`), driven over HTTP: what the benchmarks
and `cachewarm demo` use, so that the source does not share their GIL. Same control methods as `SourceServer`.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

Json = dict[str, Any]

class SourceProcess:
    """The source in a child process (`python -m cachewarm.demo.source`), driven over HTTP."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.05,
                 items: int = 100_000) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.items = items
        self.process: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> Self:
        if self.process is not None:
            return self
        env = dict(os.environ)
        # The child must import this very package even when it is not installed (a checkout on sys.path).
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        args = [sys.executable, "-m", "cachewarm.demo.source", "--host", self.host, "--port", str(self.port),
                "--latency", str(self.latency), "--items", str(self.items)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, start_new_session=True)
        try:
            line = self._read_ready_line(timeout)
            self.port = int(line.rsplit(":", 1)[1])
        except BaseException:
            self.stop()
            raise
        self._client = httpx.Client(base_url=self.url, timeout=10.0)
        return self

    def _read_ready_line(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"the source did not report ready within {timeout}s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.process.wait(5)
                    raise RuntimeError(f"the source exited with status {code} before it was ready")
                data += chunk
        line = data.split(b"\n", 1)[0].decode().strip()
        if not line.startswith("listening on http://"):
            raise RuntimeError(f"unexpected first line from the source: {line!r}")
        return line

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stdout is not None:
            process.stdout.close()

    def _request(self, method: str, path: str, json_body: Json | None = None) -> Any:
        if self._client is None:
            raise RuntimeError("the source is not running")
        response = self._client.request(method, path, json=json_body)
        if response.status_code == 404:
            raise KeyError(path)
        if response.status_code == 400:
            raise ValueError(response.json().get("error", response.text))
        response.raise_for_status()
        return response.json()

    def stats(self) -> Json:
        result: Json = self._request("GET", "/_stats")
        return result

    def reset_stats(self) -> None:
        self._request("POST", "/_stats/reset")

    def configure(self, **settings: Any) -> Json:
        result: Json = self._request("POST", "/_control", settings)
        return result

    def bump(self, item_id: int | str) -> Json:
        result: Json = self._request("POST", f"/_control/bump/{item_id}")
        return result

    def set_item(self, item_id: int | str, body: Json) -> Json:
        result: Json = self._request("PUT", f"/_control/item/{item_id}", body)
        return result

    def delete_item(self, item_id: int | str) -> bool:
        return bool(self._request("DELETE", f"/_control/item/{item_id}")["deleted"])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
