"""Shared fixtures: real services are started by the plugins below on free loopback ports."""

pytest_plugins = [
    "tests.support.postgres",
    "tests.support.mosquitto",
    "tests.support.influx",
]
