"""Northbound: publishing a site's readings and alarms upstream (Sparkplug B over MQTT)."""
