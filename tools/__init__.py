"""Command-line interface (`geo`) and benchmarks."""
