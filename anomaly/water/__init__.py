"""Water networks: the leak detector on a zone's water balance and the tanks in that
balance (storage, tank mains, the tanks' profile, a tank at its floor or top)."""
