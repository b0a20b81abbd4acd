"""A simulated site's protocol faces: Modbus TCP (and where each signal
sits in its registers), OPC UA, IEC 60870-5-104 (and its frames)."""
