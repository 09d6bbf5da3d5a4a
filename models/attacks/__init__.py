"""Attacks in [0, 1] input space: the ε-sweep engine for evaluation (`sweep`) and the training-time
perturbations of adversarial training (`perturb`)."""

from models.attacks.suite import DECISION_BLOCK
from models.attacks.sweep import ATTACKS, AttackEntry, AttackResult, fgsm_examples, run_attack

__all__ = ["ATTACKS", "DECISION_BLOCK", "AttackEntry", "AttackResult", "fgsm_examples", "run_attack"]
