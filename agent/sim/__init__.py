"""Simulated source of the agent: speech-like audio, a sender and the network path between them."""
