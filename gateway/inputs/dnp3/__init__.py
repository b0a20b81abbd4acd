"""DNP3 (IEEE 1815) master: gateway/inputs/dnp3/README.md."""
