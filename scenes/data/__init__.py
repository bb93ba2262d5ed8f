"""Dataset readers and writers that turn captures into scene graphs."""
