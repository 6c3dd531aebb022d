"""Experiment runners, applications of the library: ``qd-sweep`` (many configs on one loaded
model), ``qd-scan`` (block × language sensitivity scans) and ``qd-diagnose`` (weight statistics,
tokenizer fertility)."""
