"""A seeded, reproducible device fleet that publishes realistic telemetry over MQTT."""
