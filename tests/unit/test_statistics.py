"""reports.statistics: the Student-t routines against table values, describe, the paired test, summarize."""

from __future__ import annotations

import math

import pytest

from core.reports import AttackAccuracy, Check, Cost, RunReport, WorstCase
from reports.statistics import (
    accuracy_interval,
    betainc,
    clopper_pearson,
    describe,
    holm,
    mcnemar_drop_p,
    paired_t_test,
    summarize,
    t_cdf,
    t_ppf,
    t_two_sided_p,
    with_intervals,
    worst_case_metric,
)


@pytest.mark.parametrize(("df", "expected"), [
    (1, 12.706205), (2, 4.302653), (3, 3.182446), (4, 2.776445), (9, 2.262157), (30, 2.042272), (1000, 1.962339),
])
def test_t_quantile_matches_table(df: int, expected: float) -> None:
    assert t_ppf(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert t_ppf(0.025, df) == pytest.approx(-expected, abs=1e-6)


def test_t_cdf_closed_forms() -> None:
    # df=1 is Cauchy: F(t) = 1/2 + atan(t)/π; df=2: F(t) = 1/2 + t / (2 √(2 + t²)).
    for t in (-7.0, -1.0, 0.0, 0.3, 1.0, 4.0, 50.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    assert t_two_sided_p(2.0, 2) == pytest.approx(0.183503419, abs=1e-9)
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)
    assert t_two_sided_p(math.inf, 5) == 0.0


def test_betainc_edges_and_symmetry() -> None:
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    assert betainc(1.0, 1.0, 0.37) == pytest.approx(0.37)  # uniform
    assert betainc(2.5, 0.5, 0.8) == pytest.approx(1 - betainc(0.5, 2.5, 0.2), abs=1e-13)
    with pytest.raises(ValueError):
        betainc(0.0, 1.0, 0.5)
    with pytest.raises(ValueError):
        t_ppf(1.0, 3)


def test_t_routines_agree_with_scipy_when_present() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 9, 17, 60):
        for t in (0.05, 0.7, 1.9, 3.3, 8.0):
            assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9, abs=1e-15)
        for p in (0.6, 0.9, 0.995):
            assert t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_describe() -> None:
    one = describe([0.7])
    assert (one.mean, one.std, one.ci95, one.n) == (0.7, 0.0, None, 1)
    s = describe([0.9, 0.8, 0.7])
    assert s.mean == pytest.approx(0.8) and s.std == pytest.approx(0.1) and s.n == 3
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert s.ci95 == pytest.approx((0.8 - half, 0.8 + half), abs=1e-6)
    with pytest.raises(ValueError):
        describe([])


def test_paired_t_test_by_hand() -> None:
    # differences 1, 2, 3: mean 2, sd 1, t = 2√3, df 2 → p = 1 − t/√(2 + t²) = 1 − 2√3/√14.
    diff, p = paired_t_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert diff == pytest.approx(2.0)
    assert p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), abs=1e-12)
    diff, p = paired_t_test([0.5, 0.6], [0.6, 0.8])  # differences −0.1, −0.2
    assert diff == pytest.approx(-0.15)
    assert p == pytest.approx(1 - 2 * math.atan(3.0) / math.pi, abs=1e-12)


def test_paired_t_test_undefined_cases() -> None:
    diff, p = paired_t_test([0.5], [0.4])
    assert diff == pytest.approx(0.1) and p is None
    diff, p = paired_t_test([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])  # equal up to rounding
    assert diff == pytest.approx(0.1) and p is None
    with pytest.raises(ValueError):
        paired_t_test([1.0, 2.0], [1.0])


def _run(name: str, seed: int, clean: float, worst: tuple[float, float], *, trustworthy: bool = True,
         ratio: float | None = 1.0, train: float = 10.0) -> RunReport:
    return RunReport(
        regularizer=name, kind="none" if name == "erm" else "double_backprop", seed=seed, clean_accuracy=clean,
        samples=500,
        robust=[AttackAccuracy(attack="fgsm", norm="linf", eps=0.1, accuracy=worst[0] + 0.05),
                AttackAccuracy(attack="pgd", label="pgd-20x1", norm="linf", eps=0.1, accuracy=worst[0]),
                AttackAccuracy(attack="pgd", norm="l2", eps=0.5, accuracy=worst[1])],
        worst_case=[WorstCase(norm="linf", eps=0.1, accuracy=worst[0]),
                    WorstCase(norm="l2", eps=0.5, accuracy=worst[1])],
        cost=Cost(train_seconds=train, step_time_ratio_to_baseline=ratio),
        checks=[Check(name="large_eps_reaches_chance", status="pass" if trustworthy else "fail", detail="")],
        trustworthy=trustworthy,
    )


def _runs() -> list[RunReport]:
    # runs in training order, interleaved: the summary keeps the first appearance of each name.
    return [
        _run("erm", 0, 0.95, (0.20, 0.40), train=10.0), _run("dbp", 0, 0.93, (0.45, 0.55), ratio=2.0, train=20.0),
        _run("erm", 1, 0.96, (0.22, 0.42), train=12.0), _run("dbp", 1, 0.92, (0.50, 0.60), ratio=2.2, train=22.0),
        _run("erm", 2, 0.94, (0.24, 0.41), train=14.0),
        _run("dbp", 2, 0.93, (0.52, 0.58), trustworthy=False, ratio=2.4, train=24.0),
    ]


def test_summarize_aggregates_per_regularizer() -> None:
    erm, dbp = summarize(_runs(), "erm")
    assert (erm.regularizer, dbp.regularizer) == ("erm", "dbp")
    assert erm.kind == "none" and dbp.kind == "double_backprop"
    assert erm.clean_accuracy.mean == pytest.approx(0.95) and erm.clean_accuracy.std == pytest.approx(0.01)
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert erm.clean_accuracy.ci95 == pytest.approx((0.95 - half, 0.95 + half), abs=1e-6)
    assert [(w.norm, w.eps) for w in erm.worst_case] == [("linf", 0.1), ("l2", 0.5)]
    assert erm.worst_case[0].mean == pytest.approx(0.22) and erm.worst_case[0].std == pytest.approx(0.02)
    assert [(r.attack, r.label, r.norm) for r in dbp.robust_accuracy] == [
        ("fgsm", "", "linf"), ("pgd", "pgd-20x1", "linf"), ("pgd", "", "l2")]
    assert dbp.robust_accuracy[0].mean == pytest.approx(0.54) and dbp.robust_accuracy[0].n == 3
    assert erm.trustworthy and not dbp.trustworthy  # one failed run taints the regularizer
    assert dbp.step_time_ratio_to_baseline == pytest.approx(2.2) and dbp.train_seconds == pytest.approx(22.0)
    assert erm.step_time_ratio_to_baseline == pytest.approx(1.0)


def test_summarize_pairs_with_the_baseline() -> None:
    erm, dbp = summarize(_runs(), "erm")
    assert erm.vs_baseline == []
    by_metric = {c.metric: c for c in dbp.vs_baseline}
    assert list(by_metric) == ["clean", worst_case_metric("linf", 0.1), worst_case_metric("l2", 0.5)]
    clean = by_metric["clean"]  # differences −0.02, −0.04, −0.01
    assert clean.difference == pytest.approx(-7 / 300)
    # sd of the differences √(7/30000), t = −√7, df 2 → p = 1 − √7/√9.
    assert clean.p_value == pytest.approx(1 - math.sqrt(7) / 3, abs=1e-9) and not clean.significant
    linf = by_metric["worst_case:linf:0.1"]  # differences 0.25, 0.28, 0.28: robust gain, significant
    assert linf.difference == pytest.approx(0.27) and linf.p_value is not None and linf.p_value < 0.01
    assert linf.significant


def test_summarize_pairs_only_shared_seeds_and_handles_missing_baseline() -> None:
    runs = [r for r in _runs() if not (r.regularizer == "erm" and r.seed == 2)]
    _, dbp = summarize(runs, "erm")
    clean = next(c for c in dbp.vs_baseline if c.metric == "clean")
    assert clean.difference == pytest.approx(-0.03)  # seeds 0 and 1 only
    assert all(s.vs_baseline == [] for s in summarize(_runs(), None))
    assert all(s.vs_baseline == [] for s in summarize(_runs(), "absent"))
    single = summarize([_run("ckpt", 0, 0.9, (0.1, 0.2), ratio=None)], None)[0]
    assert single.clean_accuracy.ci95 is None and single.step_time_ratio_to_baseline is None


def test_holm_adjusts_and_keeps_order() -> None:
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 → 0.04, max(0.04, 0.06), max(0.06, 0.06), max(0.06, 0.5)
    assert holm([0.03, None, 0.01, 0.5, 0.02]) == pytest.approx([0.06, None, 0.04, 0.5, 0.06])  # type: ignore[arg-type]
    assert holm([]) == [] and holm([None]) == [None]
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_summarize_corrects_for_multiple_comparisons() -> None:
    _, dbp = summarize(_runs(), "erm")
    raw = [c.p_value for c in dbp.vs_baseline]
    assert [c.p_adjusted for c in dbp.vs_baseline] == pytest.approx(holm(raw))  # type: ignore[arg-type]
    for c in dbp.vs_baseline:
        assert c.p_adjusted is not None and c.p_value is not None and c.p_adjusted >= c.p_value
        assert c.significant == (c.p_adjusted < 0.05)


# Clopper-Pearson 95 % intervals, from scipy.stats.beta.ppf (and the binomial tables): k of n.
@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (8, 10, 0.4439045376923585, 0.9747892736731666),
    (0, 10, 0.0, 0.3084971078187380),  # the rule of three's exact form: 1 − 0.025^(1/10)
    (10, 10, 0.6915028921812620, 1.0),
    (450, 500, 0.8702909143377969, 0.9248641849335745),
    (1, 2, 0.0125791, 0.9874209),
])
def test_clopper_pearson_matches_known_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = clopper_pearson(k, n)
    assert lo == pytest.approx(low, abs=1e-7) and hi == pytest.approx(high, abs=1e-7)
    assert accuracy_interval(k / n, n) == (lo, hi)


def test_clopper_pearson_narrows_with_samples_and_refuses_nonsense() -> None:
    widths = [hi - lo for lo, hi in (clopper_pearson(n * 9 // 10, n) for n in (100, 400, 1600))]
    assert widths[0] > widths[1] > widths[2]
    assert clopper_pearson(5, 10, confidence=0.99)[0] < clopper_pearson(5, 10)[0]
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson(11, 10)
    assert accuracy_interval(0.5, 0) is None


def test_mcnemar_drop_p_is_the_binomial_tail_of_the_discordant_pairs() -> None:
    assert mcnemar_drop_p(0, 0) == 1.0 and mcnemar_drop_p(0, 7) == 1.0
    assert mcnemar_drop_p(15, 0) == pytest.approx(0.5 ** 15)
    assert mcnemar_drop_p(3, 3) == pytest.approx(0.65625)  # P(X ≥ 3), X ~ Bin(6, ½) = 42/64
    assert mcnemar_drop_p(20, 5) == pytest.approx(0.0020386, abs=1e-7)  # scipy binomtest(20, 25, greater)


def test_with_intervals_fills_every_accuracy_of_a_run() -> None:
    run = RunReport(regularizer="m", kind="checkpoint", seed=0, clean_accuracy=0.9, samples=500,
                    robust=[AttackAccuracy(attack="pgd", norm="linf", eps=0.1, accuracy=0.5)],
                    worst_case=[WorstCase(norm="linf", eps=0.1, accuracy=0.5)])
    filled = with_intervals(run)
    assert filled.clean_interval == clopper_pearson(450, 500)
    assert filled.robust[0].interval == filled.worst_case[0].interval == clopper_pearson(250, 500)
    again = RunReport.model_validate_json(filled.model_dump_json())  # JSON keeps them; older reports lack them
    assert again.clean_interval == filled.clean_interval and run.clean_interval is None
