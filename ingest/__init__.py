"""Telemetry ingest: MQTT in, validated readings out to a telemetry store."""
