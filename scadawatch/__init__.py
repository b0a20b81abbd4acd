"""The `scadawatch` command line: the one composition root of gateway, anomaly, api, simulators."""
