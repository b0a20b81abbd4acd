"""The HTTP API: health, points, latest, history and metrics over FastAPI."""
