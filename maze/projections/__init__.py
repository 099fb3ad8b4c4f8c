"""What we know: pure folds of events into DuckDB read models, and the projector that applies them."""
