"""A team's own Celery app with cachewarm installed into it: the shape of a project's ``celery.py``.

    celery -A examples.celery_project worker                                        # the team's worker, as before
    celery -A examples.celery_project worker -Q cachewarm.refresh,cachewarm.scan \\
        --prefetch-multiplier 1 -n cachewarm@%h                                    # cachewarm's worker
    celery -A examples.celery_project beat                                         # one beat: the team's + the scan

Settings come from CACHEWARM_* (CACHEWARM_REDIS_URL, CACHEWARM_CONFIG, ...); the broker is the team's (PROJ_BROKER_URL
here). tests/support/team_app.py is this app under test (tests/worker/test_shared_broker.py).
"""

from __future__ import annotations

import os

from celery import Celery

from cachewarm.worker.install import install

app = Celery("proj", broker=os.environ.get("PROJ_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.beat_schedule = {"proj.nightly_report": {"task": "proj.nightly_report", "schedule": 24 * 3600.0}}


@app.task(name="proj.nightly_report")  # type: ignore[untyped-decorator]
def nightly_report() -> str:
    return "report sent"


install(app)
