"""Maintenance-plan scheduling: pure planning plus the APScheduler adapter (later issue)."""
