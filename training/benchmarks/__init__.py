"""`nfldm bench`: every benchmark of the project in one table, and the benchmarks sized by the preset table
(sampling, sensors, refinement) and the start-up benchmark."""
