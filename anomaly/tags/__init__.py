"""Detectors that judge each tag on its own readings: limits, sensor faults (stuck,
spike), drift, comms and dropout, and the tag-scope anomaly."""
