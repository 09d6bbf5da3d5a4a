"""Issue 12 on CUDA: finite differences under bf16 autocast, a loop without per-step host syncs,
and the trained input-Hessian penalty against exact eigenvalues. Marked `gpu`: deselected by
default and skipped without CUDA; benchmarks/gpu_all.py runs them on the GPU machine."""

from __future__ import annotations

import warnings

import pytest
import torch

from core.enums import Task
from core.specs import DigitsDataset, TrainingSpec
from core.specs.model import LeNet5Model, MLPModel
from core.specs.regularizers import DoubleBackprop, InputHessian, NoRegularizer
from models.architectures import build_from_spec, build_model
from models.datasets import load_dataset
from models.regularizers import Batch, build_regularizer
from models.training import fit
from models.training.loop import clean_score

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DigitsDataset(name="digits", train_size=640, test_size=300, seed=0))


@pytest.mark.parametrize("method", ["double_backprop", "cure"])
def test_finite_difference_penalty_under_cuda_bf16_matches_fp32(method) -> None:
    """The collapse of issue 12 (PreAct ResNet-18, train mode): bf16 made the difference noise."""
    torch.manual_seed(0)
    model = build_model("resnet18", {}, (3, 32, 32), 10, None, None).to(CUDA).train()
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.rand(64, 3, 32, 32, generator=g).to(CUDA), torch.randint(0, 10, (64,), generator=g).to(CUDA))
    spec = (DoubleBackprop(name="fd", kind="double_backprop", method="finite_difference") if method == "double_backprop"
            else InputHessian(name="cure", kind="input_hessian", method="finite_difference"))
    reg = build_regularizer(spec, Task.CLASSIFICATION)
    fp32 = reg.objective(model, batch, torch.Generator(device=CUDA)).penalty
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = reg.objective(model, batch, torch.Generator(device=CUDA)).penalty
    assert abs(float(bf16) / float(fp32) - 1) < 0.02, (float(bf16), float(fp32))


def test_finite_difference_training_with_cuda_bf16_reaches_the_fp32_accuracy(digits) -> None:
    spec = DoubleBackprop(name="fd", kind="double_backprop", method="finite_difference", weight=1.0)
    training = TrainingSpec(epochs=10, batch_size=32, optimizer="adam", lr=3e-3, schedule="cosine")
    accuracy = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_from_spec(LeNet5Model(architecture="lenet5"), digits.input_shape, digits.num_outputs,
                                digits.channel_stats())
        fit(model, build_regularizer(spec, Task.CLASSIFICATION), digits, training, seed=0, device=CUDA, amp=amp)
        accuracy[amp] = clean_score(model, digits)
    assert accuracy[False] > 0.6
    assert abs(accuracy[True] - accuracy[False]) <= 0.01, accuracy


@pytest.mark.parametrize(
    "spec",
    [NoRegularizer(name="erm", kind="none"), InputHessian(name="h", kind="input_hessian", weight=0.1)],
    ids=["erm", "input_hessian"],
)
def test_the_loop_syncs_with_the_host_a_few_times_per_epoch_not_every_step(digits, spec) -> None:
    """CUDA's sync debug mode warns at every synchronizing call: 20 steps per epoch, a handful of syncs."""
    torch.manual_seed(0)
    model = build_from_spec(MLPModel(architecture="mlp", params={"hidden": [64]}), digits.input_shape,
                            digits.num_outputs, digits.channel_stats())
    training = TrainingSpec(epochs=2, batch_size=32, optimizer="adam", lr=3e-3, amp=True)
    events = []
    fit(model, build_regularizer(spec, Task.CLASSIFICATION), digits, training, seed=0, device=CUDA,
        progress=events.append, progress_seconds=3600.0)  # warm-up: kernels, data moved to the GPU
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit(model, build_regularizer(spec, Task.CLASSIFICATION), digits, training, seed=0, device=CUDA,
                progress=events.append, progress_seconds=3600.0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    steps = 2 * (640 // 32)
    assert len(syncs) <= 4 * 2 + 4, [str(w.message) for w in syncs][:10]  # per epoch: first step, end, state
    assert len(syncs) < steps


def test_trained_input_hessian_penalty_on_cuda_is_within_ten_percent_of_exact(digits) -> None:
    from tests.unit.test_training import _exact_mean_top_eigenvalue

    reg = build_regularizer(InputHessian(name="h", kind="input_hessian", weight=0.1), Task.CLASSIFICATION)
    torch.manual_seed(0)
    model = build_from_spec(LeNet5Model(architecture="lenet5"), digits.input_shape, digits.num_outputs,
                            digits.channel_stats())
    fit(model, reg, digits, TrainingSpec(epochs=8, batch_size=32, lr=3e-3, amp=False), seed=0, device=CUDA)
    x, y = digits.x_train[:96], digits.y_train[:96]
    model.train()
    trained = torch.stack([
        reg.objective(model, Batch(x[s : s + 32].to(CUDA), y[s : s + 32].to(CUDA), index=torch.arange(s, s + 32)),
                      torch.Generator(device=CUDA)).penalty
        for s in range(0, 96, 32)
    ]).mean()
    exact = _exact_mean_top_eigenvalue(model.cpu(), x, y)
    assert 0.9 * exact <= float(trained) <= exact * (1 + 1e-3), (float(trained), exact)
