"""robustlab: an adversarial-robustness lab. The `robustlab` console script lives in robustlab.cli."""

__version__ = "0.1.0"
