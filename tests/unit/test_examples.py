"""Every example spec in examples/ validates (they are documentation that must not rot)."""

from pathlib import Path

import pytest

from core.specs import load_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"digits-quick.yaml", "mnist-small.yaml", "cifar10-gpu.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    spec = load_spec(path)
    assert spec.regularizers and spec.evaluation.attacks
