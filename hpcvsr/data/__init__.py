"""Data sources, degradation and the index maths that feeds the networks."""
