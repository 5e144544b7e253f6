"""Celery: the app (queues, routes, priorities, beat), the wire names, sending by name, thin entry points."""
