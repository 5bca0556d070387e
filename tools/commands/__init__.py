"""Subcommands of ``sigkiosk``, one module each."""
