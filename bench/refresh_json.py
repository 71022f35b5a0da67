"""What a refresh's JSON work costs per key (issue 29): the source's body parsed, then encoded again for the
envelope (before), against parsed once and stored as it came (now: config/sources.py, Fetched.raw).

CPU only, in this process, no I/O: HttpSource's parse of one body and envelope.encode, repeated; both in the same
run on the same bodies. Bodies: the bench source's (demo/source_state.py: id, name, price, version) and a larger
one (a product with 20 attributes and a 1 KiB description), compact as json.dumps writes them.

    python -m bench.refresh_json [--rounds 200000]
"""

from __future__ import annotations

import argparse
import json
import time

from bench.common import print_table
from cachewarm.config import sources
from cachewarm.config.sources import HttpSource
from cachewarm.redis_layer import envelope

BODIES = {
    "bench source's item (68 bytes)": json.dumps({"id": 42, "name": "Product 42", "price": 12.5, "version": 3}),
    "product, 20 attributes + 1 KiB text": json.dumps(
        {"id": 42, "version": 3, "description": "x" * 1024, **{f"attr{i}": f"value {i}" for i in range(20)}}),
}


def per_key_us(body: bytes, rounds: int, keep: bool, source: HttpSource) -> float:
    sources._KEEP_BODY = keep
    started = time.process_time()
    for _ in range(rounds):
        fetched = source._parsed(200, body)
        payload = fetched.raw if fetched.raw is not None else envelope.dumps(fetched.value)
        envelope.encode(payload, fetched_ms=1_700_000_000_000, ttl_ms=60_000, version=fetched.version)
    return (time.process_time() - started) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args()
    source = HttpSource("product", "http://127.0.0.1:1/products/{id}", timeout=1.0, version_field="version")
    rows = []
    for name, text in BODIES.items():
        body = text.encode()
        before = min(per_key_us(body, args.rounds, False, source) for _ in range(3))
        now = min(per_key_us(body, args.rounds, True, source) for _ in range(3))
        rows.append([name, f"{before:.2f}", f"{now:.2f}", f"{before - now:.2f}", f"{now / before:.2f}x"])
    print_table("refresh_json: parse + envelope per key, CPU us (best of 3)",
                ["body", "parse + dump (before)", "parse, stored as it came", "saved us/key", "ratio"], rows,
                notes=[f"{args.rounds:,} rounds each"])


if __name__ == "__main__":
    main()
