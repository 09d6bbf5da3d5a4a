"""robustlab.evaluate in a notebook: a tqdm progress bar by default, none with progress=False, stage
names to a callable; its thread count chosen like the CLI's and torch's restored afterwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import robustlab

ATTACKS = [{"kind": "fgsm", "norm": "linf", "eps": [0.1]}]


def _model_and_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 4, 4, generator=generator)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        y = net(x).argmax(1)  # the model is right on every sample: no near-chance probe
    return net, x, y


def test_a_progress_bar_by_default_and_none_when_turned_off(capsys: pytest.CaptureFixture[str]) -> None:
    net, x, y = _model_and_data()
    robustlab.evaluate(net, x, y, attacks=ATTACKS)
    shown = capsys.readouterr().err
    assert "evaluate model" in shown and "stage" in shown and "done" in shown  # tqdm writes to stderr
    robustlab.evaluate(net, x, y, attacks=ATTACKS, progress=False)
    assert capsys.readouterr().err == ""


def test_a_callable_gets_the_stage_names_and_threads_are_restored() -> None:
    net, x, y = _model_and_data()
    stages: list[str] = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        robustlab.evaluate(net, x, y, attacks=ATTACKS, progress=stages.append, threads=1)
        assert torch.get_num_threads() == 2  # the caller's count, as it was
    finally:
        torch.set_num_threads(before)
    assert any(s.startswith("fgsm") for s in stages) and "validity checks" in stages
