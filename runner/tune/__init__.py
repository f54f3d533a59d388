"""Optuna over [tune.NAME] blocks: the study in the store's database, trials as runs, --apply."""
