"""Real-time streaming: Socket.IO and plain WebSocket clients, subscriptions and the per-tick fan-out."""
