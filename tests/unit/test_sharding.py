"""An evaluation split into shards gives exactly the numbers of one run on all its samples.

Every attack kind runs once on all N samples, and again on shards [0, 100), [100, 200), ... with
the matching `offset`; the shards' results, concatenated, must equal the whole run's bit for bit
(correct matrices, the suite's white-box matrix), and their cost counts and indicator counts must
add up to the whole run's. Batch size 32 and 256 must agree the same way. One torch thread, so
that the CPU kernels are bitwise deterministic.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import Tensor, nn

from core.specs.evaluation import APGDAttack, FGSMAttack, PGDAttack, SquareAttack, SuiteSpec
from models.attacks import DECISION_BLOCK, AttackResult, run_attack
from models.attacks.context import SweepContext
from models.attacks.keyed import keyed_bits, mix_seed
from models.attacks.min_norm import min_norm_at, min_norm_state
from models.attacks.square import square_attack
from models.attacks.steps import PGD_START, start_noise
from tests.unit.attack_fixtures import one_thread, trained_digits_mlp  # noqa: F401 (a fixture)

N = 300
SHARD = 100
SEED = 3

SPECS = {
    "fgsm": FGSMAttack(kind="fgsm", eps=[0.05, 0.1]),
    "pgd-linf": PGDAttack(kind="pgd", eps=[0.05, 0.1], steps=5, restarts=2),
    "pgd-l2": PGDAttack(kind="pgd", norm="l2", eps=[0.5, 1.0], steps=5, restarts=2),
    "apgd-ce": APGDAttack(kind="apgd", eps=[0.05, 0.1], steps=10, restarts=2),
    "apgd-dlr": APGDAttack(kind="apgd", norm="l2", eps=[0.5, 1.0], loss="dlr", steps=10),
    "apgd-targeted": APGDAttack(kind="apgd", eps=[0.05, 0.1], loss="dlr", targets=3, steps=10),
    "square-linf": SquareAttack(kind="square", eps=[0.05, 0.1], queries=40),
    "square-l2": SquareAttack(kind="square", norm="l2", eps=[0.5, 1.0], queries=40),
    "suite-linf": SuiteSpec(kind="suite", eps=[0.05, 0.1]),
    "suite-l2": SuiteSpec(kind="suite", norm="l2", eps=[0.5, 1.0]),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    return trained_digits_mlp(N)


def _sharded(model: nn.Module, x: Tensor, y: Tensor, spec, batch_size: int) -> list[AttackResult]:
    return [run_attack(model, x[lo:lo + SHARD], y[lo:lo + SHARD], spec, seed=SEED, batch_size=batch_size, offset=lo)
            for lo in range(0, len(y), SHARD)]


def _member_sums(results: list[AttackResult]) -> dict[tuple[str, float, str], int]:
    """The suite members' counts, summed over results by (member, ε, field); seconds left out."""
    sums: Counter[tuple[str, float, str]] = Counter()
    for result in results:
        for record in result.members:
            for key, value in record.items():
                if key not in ("member", "eps", "seconds"):
                    sums[(str(record["member"]), float(record["eps"]), key)] += int(value)
    return dict(sums)


def _diagnostic_sums(results: list[AttackResult]) -> dict[str, float]:
    sums: Counter[str] = Counter()
    for result in results:
        sums.update(result.diagnostics)
    return dict(sums)


def _assert_same(whole: AttackResult, parts: list[AttackResult]) -> None:
    assert torch.equal(whole.correct, torch.cat([p.correct for p in parts], dim=1))
    if whole.white_correct is not None:
        assert torch.equal(whole.white_correct,
                           torch.cat([p.white_correct for p in parts if p.white_correct is not None], dim=1))
    assert whole.gradient_evaluations == sum(p.gradient_evaluations for p in parts)
    assert whole.forwards == sum(p.forwards for p in parts)
    assert _member_sums([whole]) == _member_sums(parts)
    assert _diagnostic_sums([whole]) == _diagnostic_sums(parts)
    for key in ("samples", "zero", "nonfinite"):
        assert whole.gradient_stats[key] == sum(p.gradient_stats[key] for p in parts)


@pytest.mark.parametrize("name", list(SPECS))
def test_shards_and_batch_sizes_give_exactly_the_whole_runs_result(trained, name: str) -> None:
    model, x, y = trained
    spec = SPECS[name]
    whole = run_attack(model, x, y, spec, seed=SEED, batch_size=256)
    accuracy = whole.accuracy()
    assert accuracy[-1] < float((model(x).argmax(1) == y).double().mean())  # it breaks something
    _assert_same(whole, _sharded(model, x, y, spec, batch_size=256))
    _assert_same(whole, [run_attack(model, x, y, spec, seed=SEED, batch_size=32)])
    _assert_same(whole, _sharded(model, x, y, spec, batch_size=32))


class _Rounded(nn.Module):
    """Zero input gradient almost everywhere: Square beats the white-box members and escalates."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(torch.round(x * 3) / 3)
        return out


def test_escalation_is_decided_per_block_and_shards_agree(trained) -> None:
    """Square escalates per DECISION_BLOCK: the escalated searches attack only the survivors of the
    blocks where the control broke more than its share, and shards decide as the whole run does."""
    model, x, y = trained
    rounded = _Rounded(model).eval()
    spec = SuiteSpec(kind="suite", eps=[0.1])
    whole = run_attack(rounded, x[:200], y[:200], spec, seed=SEED, batch_size=128)
    assert any(m["member"] == "square-5000" for m in whole.members)
    _assert_same(whole, _sharded(rounded, x[:200], y[:200], spec, batch_size=64))


def test_min_norm_member_is_shard_invariant(trained) -> None:
    """The L2 suite's FMN member (one run at the first radius, its distances reused at the next):
    shards and batch sizes give the whole run's result bit for bit."""
    model, x, y = trained
    spec = SuiteSpec(kind="suite", norm="l2", eps=[0.3, 0.5])
    whole = run_attack(model, x, y, spec, seed=SEED, batch_size=256)
    fmn = [m for m in whole.members if m["member"] == "fmn-t"]
    assert fmn and fmn[0]["gradient_evaluations"] > 0
    _assert_same(whole, _sharded(model, x, y, spec, batch_size=256))
    _assert_same(whole, _sharded(model, x, y, spec, batch_size=32))

    # the member alone (APGD leaves it nothing to break on this plain model): its breaks and distances
    def alone(lo: int, hi: int, batch_size: int) -> tuple[Tensor, Tensor]:
        eps = [0.3, 0.45]
        ctx = SweepContext(model=model, x=x[lo:hi], y=y[lo:hi], eps=eps, offset=lo, seed=SEED, norm="l2",
                           broken=torch.zeros(len(eps), hi - lo, dtype=torch.bool), batch_size=batch_size)
        ctx.clean_pass()
        for i in range(len(eps)):
            min_norm_at(ctx, i)
        state = min_norm_state(ctx)
        assert state is not None
        return ctx.broken, state.distance

    broken, distance = alone(0, N, 256)
    assert 0 < int(broken[0].sum()) < int(broken[1].sum())
    for batch_size in (256, 32):
        parts = [alone(lo, lo + SHARD, batch_size) for lo in range(0, N, SHARD)]
        assert torch.equal(broken, torch.cat([p[0] for p in parts], dim=1))
        if batch_size == 256:  # (a one-row tail batch may round a distance differently, never a verdict here)
            assert torch.equal(distance.nan_to_num(-1.0), torch.cat([p[1] for p in parts]).nan_to_num(-1.0))


def test_decision_block_divides_the_documented_shard_sizes() -> None:
    assert DECISION_BLOCK == 100
    assert SHARD % DECISION_BLOCK == 0


def test_starts_depend_on_the_global_index_only(trained) -> None:
    model, x, y = trained

    def context(offset: int, start_block: int = 1, n: int = N) -> SweepContext:
        return SweepContext(model=model, x=x[:n], y=y[:n], eps=[0.1], broken=torch.zeros(1, n, dtype=torch.bool),
                            batch_size=64, seed=SEED, offset=offset, start_block=start_block)

    everyone = torch.arange(N)
    full = context(0).starts(everyone, x, "linf", 0, 5, PGD_START)
    some = torch.tensor([7, 3, 250, 120])
    assert torch.equal(context(0).starts(some, x[some], "linf", 0, 5, PGD_START), full[some])
    shard = context(200, n=100)  # x[:100] stands for samples 200 … 299: the same noise as theirs
    delta = shard.starts(torch.arange(100), torch.full_like(x[:100], 0.5), "linf", 0, 5, PGD_START) - 0.5
    whole_delta = context(0).starts(everyone, torch.full_like(x, 0.5), "linf", 0, 5, PGD_START) - 0.5
    assert torch.equal(delta, whole_delta[200:])
    # one big block: the starts torchattacks draws after torch.manual_seed(restart_seed(...))
    block = context(0, start_block=1 << 30).starts(everyone, x, "l2", 0, 0, PGD_START)
    generator = torch.Generator().manual_seed(mix_seed(SEED, 0, 0, 0))
    assert torch.equal(block, torch.clamp(x + start_noise(x, 0.1, "l2", generator), 0, 1))


def test_keyed_square_does_not_depend_on_the_batch(trained) -> None:
    model, x, y = trained
    images, keys = x.view(N, 1, 8, 8), torch.arange(N) + 1000
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        with torch.no_grad():
            full = square_attack(model, images, y, eps=eps, norm=norm, queries=60, seed=9, keys=keys)
            rows = torch.tensor([299, 5, 17, 150, 42])
            part = square_attack(model, images[rows], y[rows], eps=eps, norm=norm, queries=60, seed=9, keys=keys[rows])
        assert 0 < int((full.margin <= 0).sum()) < N
        assert torch.equal(part.x_best, full.x_best[rows])
        assert torch.equal(part.queries, full.queries[rows])


def test_keyed_bits_are_murmur_finalizers_without_overflow() -> None:
    def fmix(h: int) -> int:
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    keys = torch.tensor([0, 1, 2**31 - 1, 2**32 + 5, 2**40 + 123])
    bits = keyed_bits(77, keys, 4, 3, first=10)
    stream = mix_seed(77, 4)
    for b, key in enumerate(keys.tolist()):
        h = fmix((key & 0xFFFFFFFF) ^ (stream & 0xFFFFFFFF))
        h = fmix(h ^ ((key >> 32) & 0xFFFFFFFF))
        h = fmix(h ^ (stream >> 32 & 0xFFFFFFFF))
        assert bits[b].tolist() == [fmix(fmix(h ^ (10 + j)) ^ 0x5BD1E995) for j in range(3)]
    many = keyed_bits(1, torch.arange(2000), 0, 50)
    assert int(many.min()) >= 0 and int(many.max()) < 2**32
    top = ((many >> 31) & 1).double().mean()
    assert 0.48 < float(top) < 0.52
