"""The early gate's looks (robustlab.gate.early): rounds, and the corrected levels of the looks
before the last (issue 22: looking after every round must not make wrong early stops likelier)."""

from __future__ import annotations

import torch

from core.specs import load_spec
from models.evaluation.shards import AttackOutcome, ShardOutcome
from robustlab.gate.early import interim_verdict, rounds
from robustlab.gate.policy import parse_policy
from tests.conftest import REPO


def test_rounds_double_in_whole_blocks_and_end_at_the_samples() -> None:
    assert rounds(500) == [100, 200, 400, 500]
    assert rounds(100) == [100]
    assert rounds(1000, first=150) == [200, 400, 800, 1000]


def test_a_threshold_one_look_would_pass_waits_when_four_looks_come() -> None:
    spec = load_spec(REPO / "examples" / "ci" / "spec.yaml")  # FGSM and PGD at L∞ 0.05 and 0.1
    n, robust = 100, 62  # 62/100: 95 % interval [0.517, 0.715]; at 1 − 0.05/4, its low end is under 0.5
    correct = torch.arange(n) < robust
    both = torch.stack([correct, correct])
    outcome = ShardOutcome(start=0, stop=n, clean_correct=torch.ones(n, dtype=torch.bool), gradient={},
                           attacks=[AttackOutcome(label=a.kind, eps=list(a.eps), correct=both, white_correct=None)
                                    for a in spec.evaluation.attacks])
    policy = parse_policy({"min_robust_accuracy": [{"attack": "worst_case", "norm": "linf", "eps": 0.1, "min": 0.5}],
                           "require_checks_pass": False})
    one = interim_verdict("m", outcome, spec, policy, None, looks=1)
    assert [c.status for c in one.criteria] == ["pass"] and one.decided
    four = interim_verdict("m", outcome, spec, policy, None, looks=4)
    criterion = four.criteria[0]
    assert criterion.status == "undecided" and not four.decided
    assert criterion.interval is not None and criterion.interval[0] < 0.5
