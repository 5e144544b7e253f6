"""The Celery app: queues, routes, priorities, acknowledgement policy and the beat schedule.

Priorities (mapping in `names.celery_priority`): Kombu's Redis transport merges levels
into the steps [0, 3, 6, 9] by default; `priority_steps=range(10)` keeps all ten, and
`queue_order_strategy="priority"` makes a worker drain the most urgent list first.
A message published with no priority would be read as 0, the most urgent: the route of
`run_task` (used by `apply_async`, `send_task` and `celery call` alike) therefore carries
the least urgent level, so a manually injected task waits its turn instead of jumping.

Redelivery. An unacknowledged Redis message is handed to another worker after
`visibility_timeout`; it is set well above WORKER_TIMEOUT for the broker and the result
backend, so a long task is not run twice while it is still running.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from celery import Celery
from kombu import Queue

from agentswarm.config import Settings, get_settings
from agentswarm.errors import ConfigError
from agentswarm.logs import connect_celery
from agentswarm.queue.checked import CheckedTask
from agentswarm.queue.names import (
    MONITOR_TICK,
    PLAN_TICK,
    QUEUE_OF,
    QUEUES,
    RECONCILE_TICK,
    RUN_TASK,
    UNSET_CELERY_PRIORITY,
)

TASK_ROUTES: dict[str, dict[str, str | int]] = {name: {"queue": queue} for name, queue in QUEUE_OF.items()}
TASK_ROUTES[RUN_TASK]["priority"] = UNSET_CELERY_PRIORITY


def transport_options(settings: Settings) -> dict:
    """Broker transport options shared by the broker and the result backend."""
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "priority_steps": list(range(10)),
        "queue_order_strategy": "priority",
    }


def celery_config(settings: Settings) -> dict:
    """The whole Celery configuration derived from settings."""
    opts = transport_options(settings)
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "broker_transport_options": opts,
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": "work",
        "task_routes": TASK_ROUTES,
        "task_default_priority": UNSET_CELERY_PRIORITY,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            name: {"task": task, "schedule": timedelta(seconds=every),
                   # A tick nobody picked up before the next one is due is dropped, not piled up.
                   "options": {"expires": every}}
            for name, task, every in (
                ("plan-tick", PLAN_TICK, settings.plan_interval_s),
                ("reconcile-tick", RECONCILE_TICK, settings.reconcile_interval_s),
                ("monitor-tick", MONITOR_TICK, settings.monitor_interval_s),
            )
        },
    }


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from settings (and its logging: LOG_FORMAT, task and run ids, `agentswarm.logs`)."""
    settings = settings or get_settings()
    app = Celery("agentswarm", include=["agentswarm.tasks"], task_cls=CheckedTask)
    app.conf.update(celery_config(settings))
    connect_celery(settings.log_format.value)
    return app


try:
    app = create_app()
except ConfigError as exc:  # a celery CLI importing us: one line, no traceback
    print(f"agentswarm: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
