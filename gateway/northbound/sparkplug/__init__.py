"""Sparkplug B: the edge node a gateway runs (edge.py), the payloads (payloads.py), the broker
settings a site file gives (settings.py). README.md says what goes on the wire."""
