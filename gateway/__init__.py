"""The edge gateway: protocol drivers, scheduler, spool, sinks; drives the anomaly engine."""
