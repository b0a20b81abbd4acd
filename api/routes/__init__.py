"""The API's endpoints, one module per resource: alarms, config, health,
history, metrics, points (and latest)."""
