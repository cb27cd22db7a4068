"""Celery apps used as subprocess workers by the tests; they contain no tracking code."""
