"""From a Study to runs: expansion of matrices and overrides, identity (run and cell ids), selection, stages."""
