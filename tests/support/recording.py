"""A demo source that also notes when each item was read: to find duplicate refreshes and who asked."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from aiohttp import web

from cachewarm.audit.checking import USER_AGENT as AUDIT_USER_AGENT
from cachewarm.demo.source import SourceServer, SourceState


class RecordingState(SourceState):
    """The demo source's state, also noting when each item was read (to find duplicate refreshes)."""

    def __init__(self, **kwargs: Any) -> None:
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        self.origins: defaultdict[str, list[float]] = defaultdict(list)  # X-From header (readers set it)
        self.audits: list[float] = []  # the auditor's requests (cachewarm/audit/), not refreshes nor reads
        super().__init__(**kwargs)

    async def read(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if request.headers.get("user-agent", "").startswith(AUDIT_USER_AGENT):  # the workers' auditor: apart
            self.audits.append(now)
            return await super().read(request)
        self.times[request.match_info["id"]].append(now)
        self.origins[request.headers.get("x-from", "worker")].append(now)
        return await super().read(request)


def recorded(source: SourceServer) -> RecordingState:
    """The recording state of a source made with `@pytest.mark.source(..., recording=True)`."""
    assert isinstance(source.state, RecordingState), "mark the test @pytest.mark.source(recording=True)"
    return source.state
