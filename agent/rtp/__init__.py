"""RTP and RTCP wire formats (RFC 3550, 4585, 3611), parsed and built by hand."""
