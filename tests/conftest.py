"""Shared pytest configuration."""

# Fixtures of the secure link (PKI, mosquitto brokers, PostgreSQL): tests/fixtures_link.py.
# Fixtures of the model updates (groups, admin keys, bundles, kiosks): tests/fixtures_update.py.
pytest_plugins = ["fixtures_link", "fixtures_update"]
