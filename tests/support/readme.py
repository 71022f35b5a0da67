"""Runs README.md's code blocks as written, with private ports, and checks what the text beside them claims.

A block is taken from README.md at test time (never copied into the test), so a changed command is what runs:

- ``toml`` blocks are written to ``cachewarm.toml`` in the run's directory (the README's default config path).
- ``sh`` blocks run line by line through ``sh -c``: a line ending in ``&``, or starting a server that stays in the
  foreground (uvicorn, ``cachewarm run``), runs in the background until the run ends (its port is waited for); a
  comment line right under a command is that command's expected output (``...`` stands for anything, a decimal
  number with a fraction for any such number: timings differ).
- ``python`` blocks run statement by statement in one namespace per section: a statement whose trailing comment
  starts with an exception's name must raise it; an expression whose comment starts with a literal (None, True, a
  number) must equal it; what a statement prints must match the comment (words as written, decimals as any decimal).

Ports and paths are substituted, nothing else: the README's 6379, 8000, 8001 and 9808 become free ports, and
``.venv/bin/`` the running interpreter's bin directory.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cachewarm import errors

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
DECIMAL = re.compile(r"\d+\.\d+")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str


def section(title: str, text: str | None = None) -> str:
    """The body of the `## title` section of README.md (up to the next `## `)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def blocks(body: str) -> list[Block]:
    return [Block(match[1], match[2]) for match in BLOCK.finditer(body)]


def matches(expected: str, actual: str) -> bool:
    """`actual` is what `expected` (a README comment) describes: `...` is anything, a decimal any decimal."""
    pattern = ""
    for part in re.split(r"(\.\.\.|\d+\.\d+)", expected.strip()):
        if part == "...":
            pattern += ".*?"
        elif DECIMAL.fullmatch(part):
            pattern += r"\d+\.\d+"
        else:
            pattern += re.escape(part)
    return re.fullmatch(pattern, actual.strip(), re.S) is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before listening on {port}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout} s:\n{log.read_text()[-3000:]}")


@dataclass
class Run:
    """One reader following the README: a directory, an environment, the ports it substitutes, what it started."""

    tmp: Path
    ports: dict[int, int]
    env: dict[str, str] = field(default_factory=dict)
    background: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)
    namespace: dict[str, Any] = field(default_factory=dict)

    def substitute(self, text: str) -> str:
        for theirs, ours in self.ports.items():
            text = re.sub(rf"(?<![\d.]){theirs}(?!\d)", str(ours), text)
        return text.replace(".venv/bin/", f"{Path(sys.executable).parent}/")

    # ---- toml -------------------------------------------------------------------------------------------------
    def write_config(self, block: Block) -> Path:
        path = self.tmp / "cachewarm.toml"
        path.write_text(self.substitute(block.code), encoding="utf-8")
        return path

    # ---- sh ---------------------------------------------------------------------------------------------------
    def shell(self, block: Block) -> list[tuple[str, str]]:
        """Runs the block; (command, output) of each foreground command, checked against its comment lines."""
        results: list[tuple[str, str]] = []
        lines = block.code.splitlines()
        for i, line in enumerate(lines):
            command = line.split("  #", 1)[0].strip()
            if not command or command.startswith("#"):
                continue
            command = self.substitute(command)
            if command.endswith("&") or re.search(r"\buvicorn\b|\bcachewarm run\b", command):
                self.start(command.rstrip("&").strip())
                continue
            done = subprocess.run(command, shell=True, cwd=self.tmp, env=self.env, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            results.append((command, done.stdout))
            expected = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if expected.startswith("# {") or expected.startswith("# ["):
                assert matches(expected[2:], done.stdout), f"`{command}` printed {done.stdout!r}, README: {expected}"
        return results

    def start(self, command: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"background-{len(self.background)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, shell=True, cwd=self.tmp, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append((proc, log))
        port = re.search(r"--port[ =](\d+)", command)
        if port:
            wait_for_port(int(port[1]), proc, log)
        return proc

    def stop(self) -> None:
        for value in self.namespace.values():  # the blocks' clients (a Cache holds a pool and a flush thread)
            if type(value).__name__ in ("Cache", "AsyncCache") and callable(getattr(value, "close", None)):
                with contextlib.suppress(Exception):
                    value.close()
        for proc, _ in reversed(self.background):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in reversed(self.background):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    # ---- python -----------------------------------------------------------------------------------------------
    def python(self, block: Block) -> None:
        source = block.code
        lines = source.splitlines()
        tree = ast.parse(source)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        cwd = Path.cwd()
        os.chdir(self.tmp)
        try:
            for node in tree.body:
                line = lines[node.end_lineno - 1] if node.end_lineno else ""
                comment = line.split("#", 1)[1].strip() if "#" in line else ""
                self._statement(node, comment, ast.get_source_segment(source, node) or "")
        finally:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(saved)

    def _statement(self, node: ast.stmt, comment: str, text: str) -> None:
        raises = _exception_named(comment)
        printed = io.StringIO()
        value: Any = None
        try:
            with contextlib.redirect_stdout(printed):
                if isinstance(node, ast.Expr):
                    value = eval(compile(ast.Expression(node.value), "<README>", "eval"), self.namespace)
                else:
                    exec(compile(ast.Module([node], []), "<README>", "exec"), self.namespace)
        except Exception as exc:
            assert raises is not None and isinstance(exc, raises), f"`{text}` raised {exc!r}; README: # {comment}"
            return
        assert raises is None, f"`{text}` raised nothing; README: # {comment}"
        literal = re.match(r"(None|True|False|-?\d+(?:\.\d+)?)\b", comment)
        if isinstance(node, ast.Expr) and literal and not printed.getvalue():
            assert value == ast.literal_eval(literal[1]), f"`{text}` gave {value!r}; README: # {comment}"
        if printed.getvalue():
            assert matches(comment, printed.getvalue()), f"`{text}` printed {printed.getvalue()!r}; README: # {comment}"


def _exception_named(comment: str) -> type[BaseException] | None:
    name = re.match(r"([A-Z]\w+)\b", comment)
    found = getattr(errors, name[1], None) if name else None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None
