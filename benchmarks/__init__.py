"""`make bench`: measured figures for reports/benchmarks.md (not part of the package)."""
