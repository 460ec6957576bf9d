"""SQL persistence and telemetry stores: adapters behind the ports in core."""
