"""Optuna studies: search spaces, objectives and reference points."""
