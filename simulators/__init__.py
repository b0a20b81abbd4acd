"""Physical simulators of a water network (wntr) and an MV grid (pandapower).

They stand alone: the gateway reaches them only over Modbus and OPC UA, as it would a field
device, or through the CSV recordings they export.
"""
