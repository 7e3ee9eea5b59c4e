"""The built-in simulator, a PacketSource (source.py): speech-like capture, a sender, and the network path between them."""
