"""What is kept of runs: the run-folder format (the journal), the SQL store (the index), provenance."""
