"""The central side of the secure link: the collector, its stores (SQLite, PostgreSQL), queries."""
