"""The station agent."""
