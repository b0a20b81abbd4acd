"""Field inputs: one folder per protocol (a plugin), and what they share (backoff, quality)."""
