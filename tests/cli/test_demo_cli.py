"""`cachewarm demo` tells the story it promises: a legend, the source load of plain cache-aside beside ours for the
same reads, one invalidation followed end to end, and no metrics URL offered after the endpoint stopped. A real
run: private redis-server, the demo source, `cachewarm run` and the readers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_the_demo_explains_itself_and_shows_an_invalidation(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEWARM_")}
    done = subprocess.run([str(Path(sys.executable).parent / "cachewarm"), "demo", "--duration", "8", "--keys", "200",
                           "--threads", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150,
                          check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    header = next(line for line in out.splitlines() if line.split()[:2] == ["t", "reads/s"])
    assert "cache-aside" in header and "source req/s" in header
    for column in header.split("  "):  # every column explained
        column = column.strip()
        if not column:
            continue
        assert re.search(rf"^  {re.escape(column)}\s", out, re.M), column
    assert "Source requests rise as keys turn hot" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s+[\d,]+\s", line)]
    assert len(rows) >= 6 and all(len(row) >= 8 for row in rows)
    invalidation = re.search(r"^invalidation: product:0 published; (deleted after [\d.]+ ms|deleted and replaced "
                             r"within [\d.]+ ms); a new value stored after [\d.]+ ms$", out, re.M)
    assert invalidation, out
    assert re.search(r"plain cache-aside on the same reads: hit ratio [\d.]+% for [\d,]+ source requests", out)
    last = out.strip().splitlines()
    assert not any(line.startswith("metrics endpoint: http") for line in last[-12:])  # no dead URL at the end
    assert "before it stopped" in out
