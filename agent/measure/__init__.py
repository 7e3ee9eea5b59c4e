"""Measurement of the 68 catalog metrics from the stream, the audio and the host."""
