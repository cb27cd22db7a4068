"""Store contract and Redis/SQLite specifics: records, indexes, Lua, concurrency, connections."""
