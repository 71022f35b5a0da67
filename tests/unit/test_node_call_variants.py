"""node_calls' pure parts: the per-node variant of a script, which replies mean "send the items one by one", the
switch, and which keys may join a node's call (tests/redis_layer/test_node_calls.py runs them on a cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.exceptions

from cachewarm.redis_layer import node_calls, script_calls
from cachewarm.redis_layer.keys import KeyLayout

L = KeyLayout("cw:")


@pytest.fixture(autouse=True)
def _supported() -> Iterator[None]:
    yield
    node_calls._unsupported.clear()


def test_a_node_call_passes_its_keys_in_argv_and_keeps_the_reply_decoding() -> None:
    call = script_calls.claim(L, keys=["a", "b"], claim_ms=5)
    node = node_calls.on_node(call, 1)
    assert node.keys == () and node.route == L.claim("a")
    assert list(node.args) == [2, 1, L.claim("a"), L.claim("b"), 5]
    assert node.script.source.startswith("#!lua flags=allow-cross-slot-keys\n")
    assert node.script.source.endswith(call.script.source) and node.script.sha != call.script.sha
    assert node.decode([2]) == ["b"]


def test_only_a_missing_key_or_a_server_without_shebangs_means_one_call_each() -> None:
    assert node_calls.not_here(redis.exceptions.ResponseError(f"{node_calls.NOT_HERE} cw:claim:{{a}}"))
    assert not node_calls.not_here(redis.exceptions.ResponseError("WRONGTYPE Operation against a key"))
    assert not node_calls.not_here([1, 2])
    assert node_calls.enabled()
    old = redis.exceptions.ResponseError("Error compiling script (new function): user_script:1: unexpected symbol "
                                         "near '#'")
    assert node_calls.not_here(old)
    assert not node_calls.enabled()  # off for the process: Redis 6 cannot run them


def test_the_bench_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CWBENCH_NODE_GROUPS", "off")
    assert not node_calls.enabled()


def test_a_key_whose_structures_share_no_slot_goes_alone() -> None:
    assert node_calls.groupable(L.value("product:1"))
    assert node_calls.groupable(L.value("a}b"))          # the tag is "a": all of its structures share it
    assert not node_calls.groupable(L.value("}a"))       # an empty tag: each structure hashed whole
    assert node_calls.slot_of(L.value("x")) == node_calls.slot_of(L.fence("x")) == node_calls.slot_of(b"{x}")
