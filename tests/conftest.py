"""Shared pytest configuration."""

# Fixtures of the secure link (PKI, mosquitto brokers, PostgreSQL): tests/fixtures_link.py.
pytest_plugins = ["fixtures_link"]
