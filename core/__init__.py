"""Torch-free shared ground: settings, job spec and report schemas, names shared by every part."""
