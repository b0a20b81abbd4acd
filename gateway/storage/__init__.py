"""Readings at rest: the spool, its drains into sinks, the embedded historian, recordings."""
