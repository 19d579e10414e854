"""Datasets: readers, writers, the built-in generators and the active-learning pool."""
