"""The state directory: where its files live, the one-agent lock, crash-safe writes."""
