"""The trace format and its sampling: '<milliseconds> <key>' per line, plain or gzip, comments and the header,
malformed lines named by number; a sample keeps every read of a share of the keys."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from cachewarm.read.tracing import lines, parse_share, sampled
from cachewarm.simulation.trace import TraceError, TraceInfo, parse, read_trace, write_lines


def test_lines_comments_header_and_times() -> None:
    trace = parse(["# cachewarm-trace sample=0.25 latency.product=0.051\n", "\n", "# a comment\n",
                   "1700000000000 product:1\n", "1700000000250.5 product:key with spaces\r\n",
                   "1700000001000 product:1\n"])
    assert trace.info.sample == 0.25 and trace.info.latency == {"product": 0.051}
    assert trace.reads == [(0.0, "product:1"), (0.2505, "product:key with spaces"), (1.0, "product:1")]
    assert trace.seconds == 1.0


def test_reads_out_of_order_are_sorted() -> None:
    assert parse(["20 b", "10 a", "30 c"]).reads == [(0.0, "a"), (0.01, "b"), (0.02, "c")]


@pytest.mark.parametrize(("text", "says"), [
    ("10 a\nten b\n", "trace:2: 'ten b' does not start with milliseconds"),
    ("10 a\n20\n", "trace:2: '20' has no key"),
    ("10 a\n20 \n", "trace:2: '20 ' has no key"),
    ("# cachewarm-trace sample=2\n10 a\n", "trace:1: sample=2 must be in (0, 1]"),
    ("# cachewarm-trace sample\n10 a\n", "trace:1: header field 'sample' is not NAME=NUMBER"),
    ("# only comments\n", "trace: no reads"),
    ("inf a\n", "trace:1: 'inf a' does not start with milliseconds"),
])
def test_a_malformed_trace_is_refused_naming_the_line(text: str, says: str) -> None:
    with pytest.raises(TraceError) as caught:
        parse(text.splitlines(keepends=True))
    assert str(caught.value).startswith(says)


def test_plain_and_gzip_files_round_trip(tmp_path: Path) -> None:
    info = TraceInfo(sample=0.5, latency={"product": 0.05})
    reads = [(1000.0, "product:1"), (1500.0, "product:2")]
    for name in ("t.trace", "t.trace.gz"):
        path = tmp_path / name
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "wt", encoding="utf-8") as handle:
            handle.writelines(write_lines(info, reads))
        trace = read_trace(path)
        assert trace.info == info
        assert trace.reads == [(0.0, "product:1"), (0.5, "product:2")]


def test_an_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"missing\.trace: cannot read the trace"):
        read_trace(tmp_path / "missing.trace")
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(TraceError, match=r"bad\.gz"):
        read_trace(bad)


def test_sampling_keeps_a_share_of_the_keys_and_all_their_reads() -> None:
    keys = [f"product:{i}" for i in range(20_000)]
    kept = [key for key in keys if sampled(key, 0.1)]
    assert 1_800 <= len(kept) <= 2_200
    assert all(sampled(key, 1.0) for key in keys[:100])
    assert set(kept) <= {key for key in keys if sampled(key, 0.2)}  # a larger share holds a smaller one's keys
    reads = [(i * 0.001, key) for i, key in enumerate(keys[:1000] * 3)]
    out = lines(reads, 0.1)
    per_key: dict[str, int] = {}
    for line in out:
        per_key[line.partition(" ")[2]] = per_key.get(line.partition(" ")[2], 0) + 1
    assert per_key == {key: 3 for key in keys[:1000] if sampled(key, 0.1)}


def test_the_switch_holds_a_share_or_is_off() -> None:
    assert parse_share(b"0.25") == 0.25 and parse_share("1") == 1.0
    assert parse_share(None) is None and parse_share(b"0") is None and parse_share(b"x") is None
    assert parse_share(b"1.5") is None
