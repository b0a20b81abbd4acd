"""OPC UA input: the client session (subscriptions, polling) and its security."""
