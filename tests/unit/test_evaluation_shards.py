"""A model's whole evaluation is the same for any shard size: the units of a job merge into exactly
what one process computes (issue 20), checks and per-sample outcomes included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from core.enums import Task
from core.reports import pack_bits, unpack_bits
from core.specs import DigitsDataset, EvaluationSpec
from core.specs.model import MLPModel
from core.specs.regularizers import NoRegularizer
from core.specs.training import TrainingSpec
from models.architectures import build_from_spec
from models.datasets import load_dataset
from models.evaluation.evaluate import evaluate_model, evaluate_shard, finish_evaluation
from models.evaluation.shards import ShardOutcome, merge_shards, shard_ranges
from models.regularizers import build_regularizer
from models.training import fit

ATTACKS = [{"kind": "fgsm", "eps": [0.05, 0.1]},
           {"kind": "pgd", "eps": [0.05, 0.1], "steps": 4, "restarts": 2},
           {"kind": "suite", "eps": [0.1]},
           {"kind": "square", "norm": "l2", "eps": [1.0], "queries": 30}]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise deterministic CPU kernels
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    data = load_dataset(DigitsDataset(name="digits", train_size=300, test_size=500, seed=0))
    torch.manual_seed(0)
    model = build_from_spec(MLPModel(architecture="mlp", params={"hidden": [32]}), data.input_shape, 10,
                            data.channel_stats())
    fit(model, build_regularizer(NoRegularizer(name="e", kind="none"), Task.CLASSIFICATION), data,
        TrainingSpec(epochs=3, batch_size=32, lr=0.01, device="cpu"), seed=0, device=torch.device("cpu"))
    return model.eval(), data


def _numbers(evaluation):  # type: ignore[no-untyped-def]
    return (evaluation.clean_accuracy, evaluation.robust, evaluation.worst_case, evaluation.outcomes,
            [(c.name, c.status, c.values) for c in evaluation.checks],
            [(m.member, m.eps, m.attacked, m.broken) for m in evaluation.suite_members],
            [(c.label, c.gradient_evaluations, c.forwards) for c in evaluation.attack_costs])


def test_shard_size_100_and_1000_and_batch_size_give_identical_evaluations(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    whole = evaluate_model(model, data, EvaluationSpec.model_validate({"attacks": ATTACKS, "shard_size": 1000}))
    sharded = evaluate_model(model, data, EvaluationSpec.model_validate({"attacks": ATTACKS, "shard_size": 100}))
    small_batches = evaluate_model(model, data, EvaluationSpec.model_validate(
        {"attacks": ATTACKS, "shard_size": 200, "batch_size": 48}))
    assert _numbers(whole) == _numbers(sharded) == _numbers(small_batches)
    assert whole.samples == 500 and 0 < whole.robust[-1].accuracy < whole.clean_accuracy  # attacks that bite
    # each attack's per-sample outcomes (schema 1.3) give exactly its reported accuracy at each radius
    assert whole.outcomes is not None
    kept = {(r.attack, r.norm, r.eps): sum(unpack_bits(r.correct, 500)) / 500 for r in whole.outcomes.attacks}
    assert kept == {(r.attack, r.norm, r.eps): r.accuracy for r in whole.robust}


def test_shards_travel_as_json_and_merge_in_any_order(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    spec = EvaluationSpec.model_validate({"attacks": ATTACKS[:2], "shard_size": 100})
    shards = [evaluate_shard(model, data, spec, a, b) for a, b in shard_ranges(500, 100)]
    travelled = [ShardOutcome.from_json(s.to_json()) for s in reversed(shards)]
    merged = merge_shards(travelled)
    assert torch.equal(merged.clean_correct, torch.cat([s.clean_correct for s in shards]))
    direct = finish_evaluation(model, data, spec, merge_shards(shards))
    assert _numbers(finish_evaluation(model, data, spec, merged)) == _numbers(direct)
    with pytest.raises(ValueError, match="do not fit together"):
        merge_shards([shards[0], shards[2]])


def test_outcome_bits_round_trip() -> None:
    bits = [bool(i % 3) for i in range(13)]
    assert unpack_bits(pack_bits(bits), 13) == bits


def test_shard_size_must_be_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 100"):
        EvaluationSpec.model_validate({"shard_size": 250})
    assert "shard_size" not in EvaluationSpec.model_validate({}).model_dump()  # out of the spec hash at its default


def test_the_specs_shard_block_is_the_suites_decision_block() -> None:
    from core.specs.evaluation import SHARD_BLOCK
    from models.attacks import DECISION_BLOCK

    assert SHARD_BLOCK == DECISION_BLOCK  # core cannot import models: the two constants must agree
