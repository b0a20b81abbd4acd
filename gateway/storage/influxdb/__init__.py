"""InfluxDB: the readings sink, its live-first catch-up, and the history reader."""
