"""The engine: threads, batching, group commit, the gate, delivery, metrics, config."""
