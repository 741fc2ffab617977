"""Benchmarks of the SDK (rendering, sensors, refinement), run by `nfldm bench`."""
