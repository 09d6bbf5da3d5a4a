"""Statistics over seeds: mean ± std with a Student-t interval, paired t-tests, per-regularizer summaries;
over samples: exact binomial (Clopper-Pearson) intervals of accuracies, exact McNemar tests.

A robustness difference between two regularizers is only worth reporting with its seed-to-seed
spread, so every summary number carries mean, std and a 95 % interval, and every comparison with the
baseline is a paired t-test over the seeds both share (the same seed fixes the data order and the
initialisation, so pairing removes that shared variance).

Torch- and scipy-free: the service and the CI gate aggregate reports without the science stack. The
Student-t CDF comes from the regularized incomplete beta function (continued fraction, Numerical
Recipes §6.4), its quantiles from bisection; both are checked against table values in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Literal

from core.reports import (
    AttackAccuracy,
    BaselineComparison,
    RegularizerSummary,
    RobustStat,
    RunReport,
    Stat,
    WorstCase,
    WorstCaseStat,
)

Norm = Literal["linf", "l2"]

_MAX_ITERATIONS = 300
_EPS = 3e-16
_TINY = 1e-300
# Below this relative spread the differences count as all equal: 0.9 − 0.8 and 0.8 − 0.7 differ in
# the last bit, which would otherwise give an enormous t and a p-value of exactly 0.
_ZERO_SPREAD = 1e-12
SIGNIFICANCE = 0.05


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes betacf)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), for a, b > 0 and x in [0, 1]."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs x in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry I_x(a,b) = 1 − I_{1−x}(b,a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's T with df degrees of freedom: I_{df/(df+t²)}(df/2, 1/2)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


def t_cdf(t: float, df: float) -> float:
    """Student-t cumulative distribution function P(T ≤ t)."""
    tail = 0.5 * t_two_sided_p(t, df)
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """Student-t quantile: the t with P(T ≤ t) = p, by bisection on the monotone CDF (|error| < 1e-12·|t|)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            raise ArithmeticError(f"t quantile {p} for df={df} is out of range")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def describe(values: list[float]) -> Stat:
    """Mean, sample std (ddof=1; 0 for one value) and 95 % Student-t interval (None below 2 values)."""
    n = len(values)
    if n == 0:
        raise ValueError("describe needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Stat(mean=mean, std=0.0, ci95=None, n=1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_ppf(0.975, n - 1) * std / math.sqrt(n)
    return Stat(mean=mean, std=std, ci95=(mean - half, mean + half), n=n)


def paired_t_test(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """Mean difference a − b and its two-sided paired t-test p-value.

    The p-value is None below two pairs or when every difference is the same (zero variance: the
    test is undefined, and a constant shift over seeds is better shown than given a p of 0).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_t_test needs at least one pair")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if n < 2:
        return mean, None
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    scale = max(abs(x) for x in (*a, *b, 1.0))
    if std <= _ZERO_SPREAD * scale:
        return mean, None
    return mean, t_two_sided_p(mean / (std / math.sqrt(n)), n - 1)


def _beta_ppf(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q, by bisection on the monotone regularized incomplete beta."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return 0.5 * (lo + hi)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for a proportion (Clopper & Pearson 1934): never narrower than it should
    be, whatever the sample size. The ends are beta quantiles: B(α/2; k, n−k+1), B(1−α/2; k+1, n−k)."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"clopper_pearson needs 0 ≤ successes ≤ trials, trials > 0; got {successes}/{trials}")
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else _beta_ppf(alpha / 2, successes, trials - successes + 1)
    high = 1.0 if successes == trials else _beta_ppf(1 - alpha / 2, successes + 1, trials - successes)
    return low, high


def accuracy_interval(accuracy: float, samples: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Clopper-Pearson interval of an accuracy measured on `samples` samples (None for none)."""
    if samples <= 0:
        return None
    correct = min(samples, max(0, round(accuracy * samples)))
    return clopper_pearson(correct, samples, confidence)


def with_intervals(run: RunReport, confidence: float = 0.95) -> RunReport:
    """The run with an interval (95 % unless told) on its clean accuracy and on every robust and
    worst-case accuracy."""
    n = run.samples

    def robust(r: AttackAccuracy) -> AttackAccuracy:
        return r.model_copy(update={"interval": accuracy_interval(r.accuracy, n, confidence)})

    def worst(w: WorstCase) -> WorstCase:
        return w.model_copy(update={"interval": accuracy_interval(w.accuracy, n, confidence)})

    return run.model_copy(update={"clean_interval": accuracy_interval(run.clean_accuracy, n, confidence),
                                  "robust": [robust(r) for r in run.robust],
                                  "worst_case": [worst(w) for w in run.worst_case]})


def mcnemar_drop_p(worse: int, better: int) -> float:
    """Exact McNemar test, one-sided for a drop: of the samples on which two models disagree, `worse`
    went from correct to wrong and `better` the other way; the p-value is P(X ≥ worse) for
    X ~ Binomial(worse + better, ½), the chance of so many drops if neither model were better."""
    if worse < 0 or better < 0:
        raise ValueError(f"discordant counts must be ≥ 0, got {worse} and {better}")
    pairs = worse + better
    if worse == 0:
        return 1.0
    tail = sum(math.comb(pairs, i) for i in range(worse, pairs + 1))
    return float(Fraction(tail, 2**pairs))


def worst_case_metric(norm: str, eps: float) -> str:
    """The metric name of a worst-case accuracy in `BaselineComparison.metric` (eps written exactly)."""
    return f"worst_case:{norm}:{eps!r}"


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None


def _worst_by_seed(runs: list[RunReport]) -> dict[tuple[Norm, float], dict[int, float]]:
    table: dict[tuple[Norm, float], dict[int, float]] = {}
    for run in runs:
        for w in run.worst_case:
            table.setdefault((w.norm, w.eps), {})[run.seed] = w.accuracy
    return table


def _compare(name: str, mine: dict[int, float], base: dict[int, float]) -> BaselineComparison | None:
    seeds = [s for s in mine if s in base]
    if not seeds:
        return None
    difference, p = paired_t_test([mine[s] for s in seeds], [base[s] for s in seeds])
    return BaselineComparison(metric=name, difference=difference, p_value=p,
                              significant=p is not None and p < SIGNIFICANCE)


def _vs_baseline(runs: list[RunReport], base_runs: list[RunReport]) -> list[BaselineComparison]:
    """Paired by seed on clean accuracy and every worst case both sides have (only shared seeds)."""
    out = [_compare("clean", {r.seed: r.clean_accuracy for r in runs}, {r.seed: r.clean_accuracy for r in base_runs})]
    base_worst = _worst_by_seed(base_runs)
    for (norm, eps), mine in _worst_by_seed(runs).items():
        if (norm, eps) in base_worst:
            out.append(_compare(worst_case_metric(norm, eps), mine, base_worst[(norm, eps)]))
    return [c for c in out if c is not None]


def _summarize_one(name: str, runs: list[RunReport], base_runs: list[RunReport] | None) -> RegularizerSummary:
    robust: dict[tuple[str, str, Norm, float], list[float]] = {}
    for run in runs:
        for r in run.robust:
            robust.setdefault((r.attack, r.label, r.norm, r.eps), []).append(r.accuracy)
    worst = _worst_by_seed(runs)
    return RegularizerSummary(
        regularizer=name,
        kind=runs[0].kind,
        clean_accuracy=describe([r.clean_accuracy for r in runs]),
        robust_accuracy=[
            RobustStat(attack=attack, label=label, norm=norm, eps=eps, **describe(values).model_dump())
            for (attack, label, norm, eps), values in robust.items()
        ],
        worst_case=[
            WorstCaseStat(norm=norm, eps=eps, **describe(list(by_seed.values())).model_dump())
            for (norm, eps), by_seed in worst.items()
        ],
        vs_baseline=_vs_baseline(runs, base_runs) if base_runs else [],
        trustworthy=all(r.trustworthy for r in runs),
        step_time_ratio_to_baseline=_mean(r.cost.step_time_ratio_to_baseline for r in runs),
        train_seconds=_mean(r.cost.train_seconds for r in runs),
    )


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (None stays None; the family is the non-None ones).

    Sorted ascending, p₍ᵢ₎ becomes max over j ≤ i of min(1, (m − j + 1)·p₍ⱼ₎): rejecting where the
    adjusted p < α keeps the chance of any false positive among all m tests at α, whatever their
    dependence, and never rejects less than Bonferroni.
    """
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def _corrected(summaries: list[RegularizerSummary]) -> list[RegularizerSummary]:
    """Every baseline comparison of the report gets its Holm-adjusted p; `significant` follows it."""
    flat = [c for s in summaries for c in s.vs_baseline]
    adjusted = iter(holm([c.p_value for c in flat]))
    out = []
    for s in summaries:
        comparisons = []
        for c in s.vs_baseline:
            p_adj = next(adjusted)
            comparisons.append(c.model_copy(update={
                "p_adjusted": p_adj, "significant": p_adj is not None and p_adj < SIGNIFICANCE}))
        out.append(s.model_copy(update={"vs_baseline": comparisons}))
    return out


def summarize(runs: list[RunReport], baseline: str | None) -> list[RegularizerSummary]:
    """One summary per regularizer, in order of first appearance, aggregated over its seeds.

    Every regularizer other than `baseline` is compared with it, paired by seed; a baseline that
    has no runs gives no comparisons. The p-values are corrected for multiple comparisons (Holm)
    over every test of the report: with 11 regularizers × 8 metrics, 88 uncorrected tests at 0.05
    would show about 4 "significant" differences by chance alone.
    """
    groups: dict[str, list[RunReport]] = {}
    for run in runs:
        if run.training_failed:  # a failed training run is shown in the runs, not aggregated or compared
            continue
        groups.setdefault(run.regularizer, []).append(run)
    base_runs = groups.get(baseline) if baseline is not None else None
    return _corrected([
        _summarize_one(name, group, None if name == baseline else base_runs)
        for name, group in groups.items()
    ])
