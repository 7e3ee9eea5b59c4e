"""The language agent and controller both speak: topology, catalogs, wire protocol, config."""
