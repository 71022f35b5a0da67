"""`cachewarm simulate`: a trace and candidate settings in, one row per candidate and its true-rate reference out;
bad input (a malformed trace, a --set naming nothing) is one line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from cachewarm.cli import cli

CONFIG = """
[keyspaces.product]
pattern = "product:{id}"
source = "http://127.0.0.1:9/products/{id}"
ttl = 5
refresh_ahead = 1
"""


def _invoke(tmp_path: Path, *args: str) -> Result:
    config = tmp_path / "cachewarm.toml"
    config.write_text(CONFIG)
    return CliRunner().invoke(cli, ["simulate", *args], env={"CACHEWARM_CONFIG": str(config)})


def _trace(tmp_path: Path) -> Path:
    lines = ["# cachewarm-trace sample=1 latency.product=0.05"]
    for i in range(6000):  # 20 reads/s for 300 s: product:0 every 0.1 s, product:1..9 every 1.9 s or so
        key = 0 if i % 2 == 0 else 1 + (i // 2) % 9
        lines.append(f"{i * 50} product:{key}")
    lines.append("1000 other:1")  # no keyspace: counted apart
    path = tmp_path / "reads.trace"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_candidates_and_their_references(tmp_path: Path) -> None:
    trace = _trace(tmp_path)
    result = _invoke(tmp_path, str(trace), "--set", "product.refresh_worth=0,10", "--hot", "1", "--warmup", "100")
    assert result.exit_code == 0, result.output
    names = [line.split("  ")[0] for line in result.output.splitlines()[1:7]]
    assert names == ["as configured", "as configured (true rates)", "product.refresh_worth=0",
                     "product.refresh_worth=0 (true rates)", "product.refresh_worth=10",
                     "product.refresh_worth=10 (true rates)"]
    assert "1 reads of keys no keyspace matches were left out" in result.output
    rows = {row["candidate"]: row for row in json.loads(_invoke(
        tmp_path, str(trace), "--set", "product.refresh_worth=0,10", "--hot", "1", "--warmup", "100",
        "--json").output)}
    # worth 0: every read key above the 0.9 threshold is refreshed, so reads hit; worth 10 s (200 reads a refresh
    # at 50 ms): nothing is, the cache is cache-aside
    assert rows["product.refresh_worth=0"]["hit_ratio"] > 0.99
    assert rows["product.refresh_worth=10"]["refreshes_per_second"] == 0
    assert rows["product.refresh_worth=10"]["hit_ratio"] < rows["product.refresh_worth=0"]["hit_ratio"]


def test_bad_input_is_one_line_and_status_2(tmp_path: Path) -> None:
    trace = _trace(tmp_path)
    for args, says in [
        (["--set", "product.nonsense=1"], "keyspaces have no field 'nonsense'"),
        (["--set", "nowhere.refresh_worth=1"], "no keyspace 'nowhere'"),
        (["--set", "product.refresh_worth"], "expected KEYSPACE.FIELD=VALUE"),
        (["--set", "product.refresh_worth=-1"], "refresh_worth"),
    ]:
        result = _invoke(tmp_path, str(trace), *args)
        assert result.exit_code == 2 and says in result.output, (args, result.output)
    bad = tmp_path / "bad.trace"
    bad.write_text("10 product:1\nnot a time\n")
    result = _invoke(tmp_path, str(bad))
    assert result.exit_code == 2 and "bad.trace:2: 'not a time' does not start with milliseconds" in result.output
