"""Datasets: the on-disk format, the registry, sampling and the pouring simulator."""
