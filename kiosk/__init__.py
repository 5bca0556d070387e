"""The appliance: daemon, sessions, template store, MQTT link, outbox, update agent."""
