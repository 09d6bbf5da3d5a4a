"""What an uploaded model costs, as the upload checker measures it (models.sources.measure), and the
tenant limits it is refused by before anything heavy runs: the CPU-bomb ONNX of issue 21, a 95 KB
`.pt` of stride-0 tensors posing as a 303 M-parameter ViT-L, a parameter-free (Constant-weights)
graph that must be accepted and evaluated, labels past the class bound."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.datasets.errors import DatasetError
from models.sources import load_user_model
from models.sources.measure import module_flops, onnx_cost, run_like_a_job
from models.sources.onnx_model import inspect_onnx
from tests.cost_fixtures import SECTION_VECTOR, constant_weights, matmul_bomb, uncountable
from worker.upload_check import Limits, OverLimit, check_dataset, check_user_model

DEFAULT = Limits(max_parameters=100_000_000, max_flops=50_000_000_000)  # Settings' defaults


def test_the_cpu_bomb_is_counted_from_its_graph_and_refused_before_it_runs(tmp_path: Path) -> None:
    path = matmul_bomb(tmp_path / "bomb.onnx")
    assert path.stat().st_size < 5000
    cost = onnx_cost(inspect_onnx(path, 10**8), [64])
    assert cost.how == "graph" and cost.forward_flops is not None
    assert cost.forward_flops >= 40 * 2 * 4096**3
    started = time.process_time()
    with pytest.raises(OverLimit) as refused:
        check_user_model(path, SECTION_VECTOR, 10**8, DEFAULT)
    assert refused.value.field == "max_forward_flops" and refused.value.limit == 50_000_000_000
    assert "MAX_FORWARD_FLOPS" in str(refused.value) and "counted from its graph" in str(refused.value)
    assert time.process_time() - started < 20  # nothing was multiplied (generous: a loaded 2-core machine)


def test_a_constant_weights_graph_is_accepted_measured_and_runs_like_a_job(tmp_path: Path) -> None:
    path = constant_weights(tmp_path / "constants.onnx")
    details = check_user_model(path, SECTION_VECTOR, 10**8, DEFAULT)
    assert details["ok"] and details["parameters"] == 64 * 10 + 10
    assert details["flops_source"] == "graph" and details["forward_flops"] >= 2 * 64 * 10
    model = load_user_model(path, _spec(SECTION_VECTOR))
    assert list(model.parameters()) == []  # what made next(model.parameters()) raise StopIteration
    run_like_a_job(model, [64], 10)


def test_an_evaluation_runs_on_a_parameter_free_model(tmp_path: Path) -> None:
    """The evaluate job's science on the Constant-weights graph (it failed with StopIteration)."""
    from core.specs.dataset import DigitsDataset
    from core.specs.evaluation import EvaluationSpec
    from models.attacks.context import model_device
    from models.datasets import load_dataset
    from models.evaluation.evaluate import evaluate_model

    model = load_user_model(constant_weights(tmp_path / "constants.onnx"), _spec(SECTION_VECTOR))
    assert model_device(model) == torch.device("cpu")
    data = load_dataset(DigitsDataset(name="digits", train_size=50, test_size=40, seed=0))
    evaluation = EvaluationSpec.model_validate({"attacks": [{"kind": "fgsm", "eps": [0.1]},
                                                            {"kind": "pgd", "eps": [0.1], "steps": 3}],
                                                "max_samples": 40})
    result = evaluate_model(model, data, evaluation)
    assert result.checks


def test_a_graph_the_structure_cannot_count_is_timed(tmp_path: Path) -> None:
    details = check_user_model(uncountable(tmp_path / "nonzero.onnx"), SECTION_VECTOR, 10**8, DEFAULT)
    assert details["flops_source"] == "timed" and details["forward_flops"] > 0 and "forward_seconds" in details
    with pytest.raises(OverLimit, match="timed forward"):
        check_user_model(uncountable(tmp_path / "nonzero.onnx"), SECTION_VECTOR, 10**8, Limits(max_flops=1))


def test_a_parameter_limit_refuses_what_the_graph_stores(tmp_path: Path) -> None:
    with pytest.raises(OverLimit) as refused:
        check_user_model(constant_weights(tmp_path / "c.onnx"), SECTION_VECTOR, 10**8, Limits(max_parameters=100))
    assert refused.value.field == "max_model_parameters" and refused.value.value == 650


def test_stride_zero_tensors_count_as_the_parameters_they_become(tmp_path: Path) -> None:
    """A few KB of expanded (stride-0) tensors loads as a 303 M-parameter ViT-L: refused by its size once
    loaded, counted on the meta device before anything is allocated."""
    pytest.importorskip("timm")
    from core.specs.model import TimmModel
    from models.sources.named import build_named

    section = {"format": "timm", "name": "vit_large_patch16_224", "input_shape": [3, 224, 224], "num_classes": 1000}
    skeleton = build_named(TimmModel.model_validate(section))
    state = {k: torch.zeros(1, dtype=v.dtype).expand(v.shape) for k, v in skeleton.state_dict().items()}
    path = tmp_path / "vit.pt"
    torch.save(state, path)
    assert path.stat().st_size < 500_000
    with pytest.raises(OverLimit) as refused:
        check_user_model(path, section, 10**9, DEFAULT)
    assert refused.value.field == "max_model_parameters" and refused.value.value > 300_000_000


def test_registry_flops_are_counted_on_a_real_sample() -> None:
    from models.architectures import build_model

    model = build_model("mlp", {"hidden": [16]}, input_shape=[64], num_outputs=10)
    assert module_flops(model, [64], device="cpu") == 2 * (64 * 16 + 16 * 10)


def test_labels_past_the_class_bound_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.npz"
    np.savez(path, x_test=np.zeros((2, 4), np.float32), y_test=np.array([0, 2**40]))
    with pytest.raises(DatasetError, match="at most 100,000 classes"):
        check_dataset(path, 10**7, 1000, None)


def _spec(section: dict[str, object]):  # type: ignore[no-untyped-def]
    from pydantic import TypeAdapter

    from core.specs.model import UserModelSpec

    return TypeAdapter(UserModelSpec).validate_python(section)
