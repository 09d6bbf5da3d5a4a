"""PyTorch science: architectures, checkpoints, datasets, regularizers, attacks, training.

No Redis, no HTTP: everything here takes tensors, modules and specs and returns data.
"""
