"""Training loop, evaluation, logging and plots."""
