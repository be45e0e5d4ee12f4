"""Sweeps: Optuna's suggestions (study.py) and trials as ordinary FineTunes (trials.py)."""
