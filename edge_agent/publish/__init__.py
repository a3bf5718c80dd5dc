"""Where alarms go: event payloads, the durable outbox, MQTT (with Home Assistant discovery) and
the console. Everything the agent emits passes through a ``sinks.Sink``."""
