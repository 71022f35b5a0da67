"""A team's own Celery app, the way a Django or FastAPI project has one, with cachewarm installed by one call.

The team's task `team.tick` goes to Celery's default queue (`celery`), its beat entry runs it twice a second, and
its routes end with a catch-all (which must not capture cachewarm's tasks). Its configuration is read lazily
(`config_from_object`, as Django's is), after `install` was called. One module, three roles:

- `celery -A tests.support.team_app worker` is the team's plain worker (consumes `celery` only);
- `celery -A tests.support.team_app worker -Q cachewarm.refresh,cachewarm.scan` is a cachewarm worker;
- `celery -A tests.support.team_app beat` is the team's beat, which now sends the scan too.

Broker: TEAM_BROKER_URL. Each `team.tick` appends the node name that ran it to the Redis list RAN_KEY at
TEAM_RECORD_URL.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from cachewarm.worker.install import install

RAN_KEY = "team:ran"


class TeamConfig:
    broker_url = os.environ.get("TEAM_BROKER_URL", "redis://127.0.0.1:6379/1")
    task_serializer = "json"
    accept_content = ["json"]
    task_routes: Any = {"*": {"queue": "celery"}}
    beat_schedule: Any = {"team.tick": {"task": "team.tick", "schedule": 0.5}}


app = Celery("team")
app.config_from_object(TeamConfig)


@app.task(name="team.tick", bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
def tick(self: Any, n: int = 0) -> int:
    client = redis.Redis.from_url(os.environ.get("TEAM_RECORD_URL", "redis://127.0.0.1:6379/0"))
    try:
        client.rpush(RAN_KEY, str(self.request.hostname))
    finally:
        client.close()
    return n


install(app)
