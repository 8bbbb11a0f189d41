"""What results look like to people and consoles: fuse-dir reports, the comparison with the baselines, accuracy
gate verdicts, volume provenance records and the pictures they hold. Measuring happens below (metrics,
evaluation); writing goes through the one output rule (files.write_together)."""
