"""Evaluation: the attack sweep's bookkeeping, validity checks, sensitivity, comparison reports."""
