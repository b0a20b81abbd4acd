"""The anomaly engine: pure computation over columnar batches; knows nothing of protocols."""
