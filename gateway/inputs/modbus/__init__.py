"""Modbus TCP/RTU input: the request plan of a device and the bus that polls it."""
