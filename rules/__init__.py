"""Pure rule evaluation: thresholds, durations, hysteresis (built in a later issue)."""
