"""Shared domain types, settings, errors and ports: the bottom layer of pmkeeper."""
