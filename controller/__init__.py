"""The central controller."""
