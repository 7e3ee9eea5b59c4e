"""The built-in simulator, a PacketSource (source.py): speech-like capture, a sender with its pacer, and the network path between them."""
