"""Attacks in [0, 1] input space. Training-time perturbations live in `perturb`."""
