"""Generates the sync client from the async one: cachewarm/read/_async/client.py -> cachewarm/read/_sync/client.py.

The two clients are one piece of code; writing it twice let them drift. As httpcore's scripts/unasync.py does, the
async source is rewritten by an ordered list of regex substitutions (`async def` -> `def`, `await ` -> ``,
`AsyncCache` -> `Cache`, ...). The async source avoids constructs the list does not cover; whatever needs a
different shape per flavour lives outside it (singleflight.py, lookup.py, plans.py, decorated.py).

    .venv/bin/python tools/unasync.py            # regenerate
    .venv/bin/python tools/unasync.py --check    # exit 1 when the committed sync file is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = {ROOT / "cachewarm/read/_async/client.py": ROOT / "cachewarm/read/_sync/client.py"}

SYNC_HEAD = (
    '"""The read-through client for threads: `Cache`. GENERATED from cachewarm/read/_async/client.py (the one source\n'
    "of both clients) by tools/unasync.py: do not edit; edit the async source and run\n"
    "`.venv/bin/python tools/unasync.py`.\n"
)

SUBSTITUTIONS: list[tuple[str, str]] = [
    (r'\A""".*?\n\n', SYNC_HEAD + "\n"),             # the module docstring's first paragraph
    (r"^import asyncio\n", ""),
    (r"^import redis\.asyncio\n", ""),
    (r"await asyncio\.to_thread\(([\w.]+)\)", r"\1()"),  # blocking calls kept off the loop: called in place
    (r"\basync def ", "def "),
    (r"\basync with ", "with "),
    (r"\basync for ", "for "),
    (r"\(await ([^\n]*)\)\.(\w+)", r"\1.\2"),  # (await x).value -> x.value
    (r"\bawait ", ""),
    (r"\bAwaitable\[([\w.]+)\]", r"\1"),
    (r"\bAwaitable, ", ""),
    (r"\bAsyncCache\b", "Cache"),
    (r"\bAsyncSingleFlight\b", "SingleFlight"),
    (r"\bhttpx\.AsyncClient\b", "httpx.Client"),
    (r"\bredis\.asyncio\.Redis\b", "redis.Redis"),
    (r"\basync_client\b", "sync_client"),
    (r"\bscripts\.arun\b", "scripts.run"),
    (r"\bscripts\.aexecute\b", "scripts.execute"),
    (r"\baclose\b", "close"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\bsource\.fetch\(", "source.fetch_sync("),
    (r"\bcoroutine=True\b", "coroutine=False"),
]
_COMPILED = [(re.compile(pattern, re.MULTILINE | re.DOTALL), repl) for pattern, repl in SUBSTITUTIONS]


def unasync(text: str) -> str:
    """The sync twin of an async source."""
    for pattern, repl in _COMPILED:
        text = pattern.sub(repl, text)
    return text


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for source, target in FILES.items():
        generated = unasync(source.read_text(encoding="utf-8"))
        if target.exists() and target.read_text(encoding="utf-8") == generated:
            continue
        stale.append(target)
        if not check:
            target.write_text(generated, encoding="utf-8")
    for target in stale:
        print(f"{'out of date' if check else 'regenerated'}: {target.relative_to(ROOT)}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
