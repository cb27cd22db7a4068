"""Shared test helpers: one Redis launcher, Celery apps and workers, the CLI runner, resolvers."""
