"""The CI gate's verdict: a report (and a baseline report) judged against a policy. Pure: no I/O.

A threshold is judged on the accuracy's 95 % interval over the samples (`decide: interval`): it
passes when the low end clears it, fails when the high end is under it, and is undecided otherwise
(more samples would decide it; with none left, undecided exits 1 like a failure). `decide: point`
compares the estimate alone. A regression against a baseline is a paired test (regression.py).

Every criterion is judged, even after one has failed, so that a CI run shows everything that is
wrong at once. A criterion that cannot be judged (the report lacks a metric the policy names) is an
error rather than a failure: the policy and the spec disagree, and exit code 2 says "fix the set-up"
where 1 would say "the model got worse".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from core.reports import RegularizerSummary, Report, RunReport
from reports.statistics import accuracy_interval, summarize
from robustlab.gate.policy import GatePolicy, RobustRequirement, same_eps
from robustlab.gate.regression import outcome_bits, paired, paired_reason, unpaired

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
CONVENTIONS_CHECK = "input_conventions"  # models/sources/probe.py: a user model near chance, and why


class Criterion(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    required: float | str | None  # a float is a lower bound on an accuracy
    actual: float | str | None
    status: Literal["pass", "fail", "undecided", "error"]
    detail: str = ""
    interval: tuple[float, float] | None = None  # the 95 % interval of `actual` over the samples
    p_value: float | None = None  # a regression: the exact McNemar p of the drop (one-sided)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    criteria: list[Criterion]
    errors: list[str] = []  # problems that kept the gate from judging at all (exit 2)

    @property
    def all_errors(self) -> list[str]:
        """The general errors and those of single criteria (a metric the report lacks)."""
        return [*self.errors, *(f"{c.name}: {c.detail}" for c in self.criteria if c.status == "error")]

    @property
    def exit_code(self) -> int:
        if self.all_errors:
            return EXIT_ERROR
        return EXIT_FAIL if any(c.status in ("fail", "undecided") for c in self.criteria) else EXIT_PASS

    @property
    def decided(self) -> bool:
        """Every criterion passed or failed: more samples would change nothing."""
        return not any(c.status == "undecided" for c in self.criteria)

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_PASS


def _metrics(entry: RegularizerSummary) -> list[tuple[str, str, float, float, str]]:
    """(attack, norm, eps, mean accuracy, label) for every robust metric of a report entry."""
    rows: list[tuple[str, str, float, float, str]] = [
        (r.attack, r.norm, r.eps, r.mean, r.label or r.attack) for r in entry.robust_accuracy]
    rows += [("worst_case", w.norm, w.eps, w.mean, "worst case") for w in entry.worst_case]
    return rows


def robust_value(entry: RegularizerSummary, want: RobustRequirement) -> tuple[float, str] | None:
    """The accuracy the requirement names, and which attack gave it; None when the report lacks it.

    Two attacks of one kind at one radius (e.g. PGD with 20 and with 100 steps) both count: the
    lower accuracy, the stronger attack, is the one judged.
    """
    found = [(value, label) for attack, norm, eps, value, label in _metrics(entry)
             if attack == want.attack and norm == want.norm and same_eps(eps, want.eps)]
    return min(found) if found else None


def evaluated(entry: RegularizerSummary) -> str:
    """What the report does have, for an error message: `fgsm linf 0.1, pgd linf 0.1, worst_case linf 0.1`."""
    names = dict.fromkeys(f"{attack} {norm} {eps:g}" for attack, norm, eps, _, _ in _metrics(entry))
    return ", ".join(names) or "no attacks"


def _summaries(report: Report) -> list[RegularizerSummary]:
    """The report's models. A summary leaves out runs whose clean accuracy is near chance (a failed
    training run is not a data point of a comparison); the gate judges such a model all the same, and
    fails it on its thresholds (exit 1): it was evaluated, it is just bad."""
    summaries = list(report.summary)
    judged = {s.regularizer for s in summaries}
    left_out = [r.model_copy(update={"training_failed": False}) for r in report.runs
                if r.training_failed and r.regularizer not in judged]
    return summaries + summarize(left_out, None) if left_out else summaries


def _entry(report: Report, what: str, name: str | None = None) -> RegularizerSummary:
    """The one model a report judges; in a report of several, the one called `name`."""
    summaries = _summaries(report)
    if len(summaries) == 1:
        return summaries[0]
    matching = [s for s in summaries if s.regularizer == name]
    if len(matching) == 1:
        return matching[0]
    names = ", ".join(s.regularizer for s in summaries) or "none"
    raise ValueError(f"the {what} report has {len(summaries)} models ({names}), and the gate judges one: "
                     "use the report of one checkpoint (`robustlab evaluate` or an evaluate job)")


def diagnosis(report: Report) -> str:
    """Why a model is near chance, when the evaluation found out (the `input_conventions` check): the
    likely cause and the spec lines that fix it."""
    for run in report.runs:
        for check in run.checks:
            if check.name == CONVENTIONS_CHECK and check.status == "fail":
                return check.detail
    return ""


def _run_of(report: Report, entry: RegularizerSummary) -> RunReport | None:
    """The one run behind a summary entry (None for several seeds: those are judged on the mean)."""
    runs = [r for r in report.runs if r.regularizer == entry.regularizer]
    return runs[0] if len(runs) == 1 else None


def measured(run: RunReport | None, want: RobustRequirement | None) -> tuple[float, tuple[float, float] | None] | None:
    """A run's accuracy (clean for want None, else the one the requirement names: the lowest of several
    attacks of the kind) and its 95 % interval, computed from the samples for older reports."""
    if run is None:
        return None
    if want is None:
        found = [(run.clean_accuracy, run.clean_interval)]
    elif want.attack == "worst_case":
        found = [(w.accuracy, w.interval) for w in run.worst_case if w.norm == want.norm and same_eps(w.eps, want.eps)]
    else:
        found = [(r.accuracy, r.interval) for r in run.robust
                 if r.attack == want.attack and r.norm == want.norm and same_eps(r.eps, want.eps)]
    if not found:
        return None
    value, interval = min(found, key=lambda f: f[0])
    return value, interval or accuracy_interval(value, run.samples)


def _at_least(name: str, value: float, minimum: float, detail: str = "",
              interval: tuple[float, float] | None = None) -> Criterion:
    """A lower bound: on the interval when there is one (pass above it, fail under it, undecided across),
    else on the value itself."""
    status: Literal["pass", "fail", "undecided"]
    if interval is None:
        status = "pass" if value >= minimum - 1e-12 else "fail"
    elif interval[0] >= minimum - 1e-12:
        status = "pass"
    elif interval[1] < minimum - 1e-12:
        status = "fail"
    else:
        status = "undecided"
        more = f"the 95 % interval [{interval[0]:.4f}, {interval[1]:.4f}] contains the threshold {minimum:g}"
        detail = f"{more}: more samples would decide it" + (f"; {detail}" if detail else "")
    return Criterion(name=name, required=minimum, actual=value, status=status, detail=detail, interval=interval)


ESCALATED_ENTRIES = ("suite", "worst_case")  # the numbers an escalation lowers (the lowest any step reached)


def _answered_by_escalation(report: Report, policy: GatePolicy | None) -> tuple[bool, str]:
    """Every untrustworthy run escalated, and at each radius the policy judges (every radius if it
    judges none) its trust is not `flagged` and, where `escalated`, the judged number is the escalated
    one (the suite's or the worst case): then the failed checks were answered, not ignored."""
    bad = [r for r in report.runs if not r.trustworthy]
    if not bad or not all(r.escalated and r.radius_trust for r in bad):
        return False, ""
    wants = list(policy.min_robust_accuracy) if policy is not None else []
    for run in bad:
        for trust in run.radius_trust:
            judged = [w for w in wants if w.norm == trust.norm and same_eps(w.eps, trust.eps)]
            if wants and not judged:
                continue
            if trust.status == "flagged":
                return False, ""
            if trust.status == "escalated" and any(w.attack not in ESCALATED_ENTRIES for w in judged):
                return False, ""
    steps = sorted({e.name for r in bad for e in r.escalations})
    return True, f"escalated ({', '.join(steps)}): the judged numbers are the lowest the escalation reached"


def _checks(report: Report, policy: GatePolicy | None = None) -> Criterion:
    failed = [f"{c.name}: {c.detail}" for c in report.checks if c.status == "fail"]
    answered, how = _answered_by_escalation(report, policy)
    if answered:
        failed = []
    untrustworthy = [r.regularizer for r in report.runs if not r.trustworthy and not answered]
    if untrustworthy and not failed:
        failed.append(f"runs flagged untrustworthy: {', '.join(untrustworthy)}")
    unchecked = [r.regularizer for r in report.runs if not r.checked]
    if unchecked:  # `evaluation.checks: off`: nothing says the numbers can be trusted
        failed.append(f"unchecked (evaluation.checks: off): {', '.join(unchecked)}; set checks: fast or full")
    warned = [c.name for c in report.checks if c.status == "warn"]
    detail = "; ".join(failed) if failed else how or f"{len(report.checks)} checks, none failed"
    if warned:
        detail += f"; warnings: {', '.join(warned)}"
    return Criterion(name="validity checks", required="no check fails",
                     actual=f"{len(failed)} failed" if failed else "escalated" if answered else "all pass",
                     status="fail" if failed else "pass", detail=detail)


def _regressions(report: Report, baseline: Report, entry: RegularizerSummary, base: RegularizerSummary,
                 policy: GatePolicy, final: bool) -> list[Criterion]:
    """Clean accuracy and every gated robust metric, each against the baseline's same metric: paired on
    the samples both evaluated (McNemar) where both reports keep the outcomes, else as numbers."""
    run, base_run = _run_of(report, entry), _run_of(baseline, base)
    criteria = []
    for want in [None, *policy.min_robust_accuracy]:
        base_value: float | None
        if want is None:
            name = "regression clean_accuracy"
            now_value, base_value = entry.clean_accuracy.mean, base.clean_accuracy.mean
        else:
            found, before = robust_value(entry, want), robust_value(base, want)
            if found is None:
                continue  # already an error of its min_robust_accuracy criterion
            name, now_value = f"regression {want.name.removeprefix('robust_accuracy ')}", found[0]
            base_value = before[0] if before else None
        if base_value is None:
            criteria.append(Criterion(name=name, required=None, actual=now_value, status="error",
                                      detail=f"the baseline lacks this metric; it evaluates: {evaluated(base)}"))
            continue
        metric, attack = (None, "worst_case") if want is None else ((want.norm, want.eps), want.attack)
        bits_now, bits_before = outcome_bits(run, metric, attack), outcome_bits(base_run, metric, attack)
        reason = ("`decide: point` in the policy" if policy.decide == "point"
                  else paired_reason(report, baseline, bits_now, bits_before))
        if not reason and bits_now is not None and bits_before is not None:
            criteria.append(Criterion.model_validate(paired(name, bits_now, bits_before, policy, final=final)))
            continue
        now = measured(run, want) if policy.decide == "interval" else None
        criteria.append(Criterion.model_validate(unpaired(name, now_value, now[1] if now else None, base_value,
                                                          policy, reason, final=final)))
    return criteria


def judge(report: Report, policy: GatePolicy, baseline: Report | None = None, *, final: bool = True) -> Verdict:
    """Every criterion of the policy applied to the report (and to the baseline, for regressions).

    final: no more samples will come (a regression with no significant drop then passes); before the
    last round of an early-stopping gate, a criterion that more samples could still change is undecided.
    """
    try:
        entry = _entry(report, "evaluated")
        base = None if baseline is None else _entry(baseline, "baseline", entry.regularizer)
    except ValueError as exc:
        return Verdict(criteria=[], errors=[str(exc)])
    run = _run_of(report, entry) if policy.decide == "interval" else None
    criteria: list[Criterion] = []
    if policy.min_clean_accuracy is not None:
        clean = measured(run, None)
        criteria.append(_at_least("clean_accuracy", entry.clean_accuracy.mean, policy.min_clean_accuracy,
                                  diagnosis(report), clean[1] if clean else None))
    for want in policy.min_robust_accuracy:
        found = robust_value(entry, want)
        if found is None:
            message = (f"the report has no {want.attack} {want.norm} eps={want.eps:g}: the spec evaluates "
                       f"{evaluated(entry)}; add that attack and radius to the spec's evaluation, or change the policy")
            criteria.append(Criterion(name=want.name, required=want.min, actual=None, status="error", detail=message))
        else:
            interval = measured(run, want)
            criteria.append(_at_least(want.name, found[0], want.min, f"attack {found[1]}",
                                      interval[1] if interval else None))
    if policy.require_checks_pass:
        criteria.append(_checks(report, policy))
    if base is not None and baseline is not None:
        criteria += _regressions(report, baseline, entry, base, policy, final)
    return Verdict(criteria=criteria)
