"""Field-device inputs, one plugin folder per protocol."""
