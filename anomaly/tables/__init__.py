"""How detectors hold their learned per-tag tables small: float32 fields, 16-bit
quantised rows, capped counts, and the parts of a saved engine state."""
