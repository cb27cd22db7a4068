"""merlin_tracking tests: a tree that mirrors the package (stores, domain, celery, cli)."""
