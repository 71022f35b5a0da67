"""The worker's broker consumer, reconnecting within a fraction of a second of the broker coming back.

Celery's consumer reconnects through kombu's ``ensure_connection`` with kombu's defaults (first retry after 2 s,
then 4 s, 6 s, ... up to 30 s), which Celery offers no setting for: after a 10 s broker outage a worker could sit
idle for several more seconds, longer than the two scan periods cachewarm promises. This consumer (installed
with the ``worker_consumer`` setting, Celery's own extension point) keeps everything else and retries every
``RETRY_START`` seconds, growing by ``RETRY_STEP`` up to ``RETRY_MAX``.

Before that, when the worker is built (before any step starts, so before the sidecar), a worker of cachewarm's own
app checks once that the cache and the broker answer (tasks/reachable.py: a few tries over about a second) and
otherwise exits with status 1 and one line naming the masked URL, instead of Celery's lines of
``Trying again in 2.00 seconds... (N/100)``. Once started, a lost broker is retried as above, without end.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from ..tasks import settings_of
from ..tasks.reachable import start_failure

# Every 0.25 s: a Sentinel failover or a broker restart is followed within about one scan period (a retry
# is one TCP connect, refused at once while the broker is down; tests/redis_layer/test_sentinel.py measured 1.1 s
# at 1.0).
RETRY_START = 0.25
RETRY_STEP = 0.25
RETRY_MAX = 0.25


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.app.main == "cachewarm":  # cachewarm's app (a team's app that opted in keeps Celery's start)
            failure = start_failure(settings_of(self.app))
            if failure is not None:
                print(f"cachewarm worker: {failure}", file=sys.stderr, flush=True)
                raise SystemExit(1)

    def ensure_connected(self, conn: Any) -> Any:
        conn.ensure_connection = functools.partial(conn.ensure_connection, interval_start=RETRY_START,
                                                   interval_step=RETRY_STEP, interval_max=RETRY_MAX)
        return super().ensure_connected(conn)
