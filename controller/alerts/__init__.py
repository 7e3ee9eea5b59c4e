"""Thresholds, alert rules, the alert engine and the alert book (see README "Thresholds and alerts")."""
