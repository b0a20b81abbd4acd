"""The simulated physical process: the water network (wntr), the MV grid
(pandapower), and the sensor layer (what an instrument reports)."""
