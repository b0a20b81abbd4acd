"""What every detector shares: readings as columnar batches, the point table, ticks,
findings and the alarm gate, and the figures of alarm messages."""
