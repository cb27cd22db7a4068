"""Managers and the database facade: the domain rules (creation, lookups, cascades, filters)."""
