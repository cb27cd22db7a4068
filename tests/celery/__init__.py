"""Celery glue: signal hooks, the worker bootstep, resolvers, settings, real worker processes."""
