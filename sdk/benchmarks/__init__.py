"""Benchmarks of the SDK's rendering, run by `nfldm bench` (the sensor and refinement benchmarks take their sizes from
the preset table and live in `nfldm_training.benchmarks`)."""
