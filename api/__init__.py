"""The HTTP API (FastAPI): an adapter that knows HTTP and nothing of MQTT."""
