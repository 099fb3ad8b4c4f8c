"""What happened: the typed event catalog, its codec and the JetStream layout."""
