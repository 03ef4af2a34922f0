"""Output files."""
