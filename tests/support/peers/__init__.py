"""Peers on loopback for the tests: servers and stations we did not write
(influxd, c104, opendnp3, node-opcua) and our own (Modbus, OPC UA, raw
sockets that misbehave on purpose)."""
