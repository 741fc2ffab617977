"""`nfldm bench`: every benchmark of the project in one table, and the start-up and sampling benchmarks."""
