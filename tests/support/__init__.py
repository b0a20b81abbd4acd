"""Helpers of the tests: real peers (Modbus, InfluxDB servers), fault injection, fixtures' parts."""
