"""The CI gate's policy and verdict, on reports built in the test (no evaluation, no torch)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from core.reports import Report
from robustlab.gate.output import GateRun, junit_xml, markdown, verdict_json
from robustlab.gate.policy import GatePolicy, PolicyError, load_policy, parse_policy
from robustlab.gate.verdict import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, judge

ROBUST = {("fgsm", "linf", 0.1): 0.62, ("pgd", "linf", 0.1): 0.55, ("pgd", "linf", 0.2): 0.31}


def make_report(clean: float = 0.93, robust: dict[tuple[str, str, float], float] | None = None,
                failed_check: bool = False, trustworthy: bool = True, name: str = "model",
                samples: int = 10_000) -> Report:
    """A one-model report; with 10,000 samples every interval is narrow (±0.01), the estimate decides."""
    robust = ROBUST if robust is None else robust
    stat = {"std": 0.0, "n": 1}
    worst: dict[tuple[str, float], float] = {}
    for (_, norm, eps), value in robust.items():
        worst[(norm, eps)] = min(value, worst.get((norm, eps), 1.0))
    checks = [{"name": "pgd_not_weaker_than_fgsm", "status": "pass", "detail": "1/1 runs pass"},
              {"name": "input_gradients_healthy", "status": "fail" if failed_check else "pass",
               "detail": "0/1 runs pass; gradients vanish" if failed_check else "1/1 runs pass"}]
    run: dict[str, Any] = {
        "regularizer": name, "kind": "checkpoint", "seed": 0, "clean_accuracy": clean, "samples": samples,
        "robust": [{"attack": a, "norm": n, "eps": e, "accuracy": v} for (a, n, e), v in robust.items()],
        "worst_case": [{"norm": n, "eps": e, "accuracy": v} for (n, e), v in worst.items()],
        "checks": checks, "trustworthy": trustworthy and not failed_check,
    }
    summary = {
        "regularizer": name, "kind": "checkpoint", "clean_accuracy": {"mean": clean, **stat},
        "robust_accuracy": [{"attack": a, "norm": n, "eps": e, "mean": v, "label": a, **stat}
                            for (a, n, e), v in robust.items()],
        "worst_case": [{"norm": n, "eps": e, "mean": v, **stat} for (n, e), v in worst.items()],
        "trustworthy": trustworthy and not failed_check,
    }
    return Report.model_validate({"kind": "evaluate", "spec": {"name": "t"}, "spec_hash": "0" * 64,
                                  "environment": {}, "runs": [run], "summary": [summary], "checks": checks})


def policy(**fields: Any) -> GatePolicy:
    return parse_policy({"min_clean_accuracy": 0.9,
                         "min_robust_accuracy": [{"attack": "pgd", "norm": "linf", "eps": 0.1, "min": 0.5}],
                         **fields})


def statuses(verdict: Any) -> dict[str, str]:
    return {c.name: c.status for c in verdict.criteria}


def test_a_report_meeting_every_criterion_passes() -> None:
    verdict = judge(make_report(), policy())
    assert verdict.exit_code == EXIT_PASS and verdict.passed
    assert statuses(verdict) == {"clean_accuracy": "pass", "robust_accuracy pgd linf eps=0.1": "pass",
                                 "validity checks": "pass"}
    clean = verdict.criteria[0]
    assert clean.required == 0.9 and clean.actual == 0.93


def test_low_clean_accuracy_fails_only_that_criterion() -> None:
    verdict = judge(make_report(clean=0.85), policy())
    assert verdict.exit_code == EXIT_FAIL
    assert statuses(verdict)["clean_accuracy"] == "fail"
    assert statuses(verdict)["robust_accuracy pgd linf eps=0.1"] == "pass"


def test_low_robust_accuracy_fails_and_worst_case_is_gated_too() -> None:
    verdict = judge(make_report(robust={**ROBUST, ("pgd", "linf", 0.1): 0.49}), policy())
    assert verdict.exit_code == EXIT_FAIL and statuses(verdict)["robust_accuracy pgd linf eps=0.1"] == "fail"
    worst = policy(min_robust_accuracy=[{"attack": "worst_case", "norm": "linf", "eps": 0.2, "min": 0.32}])
    assert statuses(judge(make_report(), worst))["robust_accuracy worst_case linf eps=0.2"] == "fail"


def test_eps_is_matched_with_a_tolerance() -> None:
    radius = 8 / 255
    report = make_report(robust={("pgd", "linf", radius): 0.6})
    verdict = judge(report, policy(min_robust_accuracy=[{"attack": "pgd", "norm": "linf", "eps": 0.0314,
                                                         "min": 0.5}]))
    assert verdict.exit_code == EXIT_PASS, verdict
    other = judge(report, policy(min_robust_accuracy=[{"attack": "pgd", "norm": "linf", "eps": 0.032, "min": 0.5}]))
    assert other.exit_code == EXIT_ERROR


def test_a_failed_validity_check_fails_the_gate_unless_the_policy_allows_it() -> None:
    verdict = judge(make_report(failed_check=True), policy())
    assert verdict.exit_code == EXIT_FAIL
    checks = next(c for c in verdict.criteria if c.name == "validity checks")
    assert checks.status == "fail" and "input_gradients_healthy" in checks.detail
    assert judge(make_report(failed_check=True), policy(require_checks_pass=False)).exit_code == EXIT_PASS
    assert judge(make_report(trustworthy=False), policy()).exit_code == EXIT_FAIL  # a run flagged, no check failed


def test_a_regression_against_the_baseline_beyond_the_allowance_fails() -> None:
    baseline = make_report(clean=0.95, robust={**ROBUST, ("pgd", "linf", 0.1): 0.60})
    gate = policy(baseline="reports/main.json", max_regression=0.02)
    verdict = judge(make_report(), gate, baseline)  # clean 0.95 → 0.93 (ok), pgd 0.60 → 0.55 (too much)
    assert verdict.exit_code == EXIT_FAIL
    assert statuses(verdict)["regression clean_accuracy"] == "pass"
    pgd = next(c for c in verdict.criteria if c.name == "regression pgd linf eps=0.1")
    assert pgd.status == "fail" and pgd.required == pytest.approx(0.58) and "drop 0.0500" in pgd.detail
    assert judge(make_report(), gate, make_report()).exit_code == EXIT_PASS  # no drop at all
    assert judge(make_report(), policy(baseline="b.json", max_regression=0.06), baseline).exit_code == EXIT_PASS


def test_a_metric_missing_from_the_report_is_an_error_naming_what_it_has() -> None:
    gate = policy(min_robust_accuracy=[{"attack": "pgd", "norm": "linf", "eps": 0.3, "min": 0.1},
                                       {"attack": "autoattack", "norm": "linf", "eps": 0.1, "min": 0.1}])
    verdict = judge(make_report(), gate)
    assert verdict.exit_code == EXIT_ERROR and not verdict.passed
    assert len(verdict.all_errors) == 2
    assert "no pgd linf eps=0.3" in verdict.all_errors[0]
    assert "fgsm linf 0.1, pgd linf 0.1, pgd linf 0.2" in verdict.all_errors[0]
    baseline = make_report(robust={("fgsm", "linf", 0.1): 0.6})  # the baseline was evaluated otherwise
    lacking = judge(make_report(), policy(baseline="b.json", max_regression=0.0), baseline)
    assert lacking.exit_code == EXIT_ERROR and "baseline lacks" in lacking.all_errors[0]


def test_a_report_of_several_models_is_an_error() -> None:
    one, other = make_report(name="a"), make_report(name="b")
    both = one.model_copy(update={"summary": [*one.summary, *other.summary]})
    verdict = judge(both, policy())
    assert verdict.exit_code == EXIT_ERROR and "judges one" in verdict.errors[0]


@pytest.mark.parametrize(("text", "path", "words"), [
    ("min_clean_accuracy: 1.5\n", "min_clean_accuracy", "less than or equal to 1"),
    ("min_robust_accuracy:\n  - {attack: pgd, norm: linf, eps: 0.1, mni: 0.5}\n", "min_robust_accuracy[0].mni",
     "did you mean 'min'"),
    ("min_robust_accuracy:\n  - {attack: cw, norm: linf, eps: 0.1, min: 0.5}\n", "min_robust_accuracy[0].attack",
     "'cw' is not allowed"),
    ("min_robust_accuracy:\n  - {attack: pgd, norm: linf, min: 0.5}\n", "min_robust_accuracy[0].eps", "missing"),
    ("baseline: main.json\n", "", "needs max_regression"),
    ("min_clean_accuracy: 0.9\nmin_clean_accuracy: 0.5\n", "min_clean_accuracy", "duplicate key"),
    ("min_clean_accuracy: [0.9\n", "", "not valid YAML at line"),
    ("- 0.9\n", "", "a policy is a mapping"),
    ("requires_checks_pass: true\n", "requires_checks_pass", "did you mean 'require_checks_pass'"),
    ("min_robust_accuracy:\n  - {attack: pgd, norm: l2, eps: 0.5, min: 0.5}\n  - {attack: pgd, norm: l2, eps: 0.5, "
     "min: 0.4}\n", "min_robust_accuracy[1]", "names pgd l2 eps=0.5 a second time"),
])
def test_bad_policies_say_where_and_what(tmp_path: Path, text: str, path: str, words: str) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(file)
    assert any(p == path and words in m for p, m in caught.value.problems), caught.value.problems


def test_the_example_policy_of_the_issue_loads(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text("min_clean_accuracy: 0.9\nmin_robust_accuracy:\n  - {attack: pgd, norm: linf, eps: 0.1, "
                    "min: 0.5}\nbaseline: reports/main.json\nmax_regression: 0.02\nrequire_checks_pass: true\n")
    loaded = load_policy(file)
    assert loaded.min_robust_accuracy[0].min == 0.5 and loaded.max_regression == 0.02
    with pytest.raises(Exception, match="frozen"):
        loaded.min_clean_accuracy = 0.1  # type: ignore[misc]


def test_outputs_show_every_criterion_and_the_junit_counts_add_up() -> None:
    report = make_report(clean=0.85, robust={("fgsm", "linf", 0.1): 0.6})
    gate = policy(min_robust_accuracy=[{"attack": "fgsm", "norm": "linf", "eps": 0.1, "min": 0.5},
                                       {"attack": "pgd", "norm": "linf", "eps": 0.1, "min": 0.5}])
    verdict = judge(report, gate)
    run = GateRun(mode="server", checkpoint="m.safetensors", server="http://ci:8000", job_id="j-1", report=report)
    text = markdown(verdict, run)
    assert "| clean_accuracy | ≥ 0.9000 | 0.8500 [0.8428, 0.8569] | ❌ fail |" in text  # with its 95 % interval
    assert "⚠️ error" in text and "`j-1`" in text
    suite = ET.fromstring(junit_xml(verdict, run)).find("testsuite")
    assert suite is not None and suite.get("name") == "robustlab-gate"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["clean_accuracy"].find("failure") is not None
    assert cases["robust_accuracy pgd linf eps=0.1"].find("error") is not None
    assert cases["robust_accuracy fgsm linf eps=0.1"].find("failure") is None
    body = verdict_json(verdict, run)
    assert '"exit_code": 2' in body and '"passed": false' in body


def test_max_regression_may_wait_for_the_baseline_of_the_command_line(tmp_path: Path) -> None:
    """`gate --baseline X` asks for max_regression in the policy; a policy with only max_regression loads,
    and the gate says what is missing when no baseline comes at all (no circular advice)."""
    from robustlab.gate.command import GateError, _baseline

    file = tmp_path / "policy.yaml"
    file.write_text("max_regression: 0.02\n")
    loaded = load_policy(file)
    assert loaded.max_regression == 0.02 and loaded.baseline is None
    with pytest.raises(GateError, match="names no baseline to compare with: pass --baseline"):
        _baseline(loaded, None, file, None, None)
    (tmp_path / "main.json").write_text(make_report().model_dump_json())
    report, source = _baseline(loaded, str(tmp_path / "main.json"), file, None, None)
    assert report is not None and source == str(tmp_path / "main.json")


# ---------------------------------------------------------------- intervals, McNemar (issue 22)
def outcome_report(clean: list[bool], worst: list[bool], name: str = "model") -> Report:
    """A report of one model with its per-sample outcomes (clean, worst case L∞ 0.1) and intervals."""
    from core.reports import RunReport, pack_bits
    from reports.statistics import summarize, with_intervals

    n = len(clean)
    run = with_intervals(RunReport.model_validate({
        "regularizer": name, "kind": "checkpoint", "seed": 0, "clean_accuracy": sum(clean) / n, "samples": n,
        "robust": [{"attack": "pgd", "norm": "linf", "eps": 0.1, "accuracy": sum(worst) / n}],
        "worst_case": [{"norm": "linf", "eps": 0.1, "accuracy": sum(worst) / n}],
        "outcomes": {"samples": n, "clean": pack_bits(clean),
                     "worst_case": [{"norm": "linf", "eps": 0.1, "correct": pack_bits(worst)}]}}))
    return Report(kind="evaluate", spec={"name": "t", "dataset": {"name": "digits"}}, spec_hash="0" * 64,
                  environment={}, runs=[run], summary=summarize([run], None), checks=[])


def bits(correct: int, n: int = 500) -> list[bool]:
    return [i < correct for i in range(n)]


WORST = [{"attack": "worst_case", "norm": "linf", "eps": 0.1, "min": 0.5}]


def test_a_threshold_passes_fails_or_is_undecided_on_its_interval() -> None:
    gate = parse_policy({"min_robust_accuracy": WORST, "require_checks_pass": False})
    far_above, far_below = outcome_report(bits(450), bits(350)), outcome_report(bits(450), bits(150))
    assert statuses(judge(far_above, gate))["robust_accuracy worst_case linf eps=0.1"] == "pass"
    assert statuses(judge(far_below, gate))["robust_accuracy worst_case linf eps=0.1"] == "fail"
    near = judge(outcome_report(bits(450), bits(260)), gate)  # 0.52 on 500 samples: [0.475, 0.564]
    criterion = near.criteria[0]
    assert criterion.status == "undecided" and near.exit_code == EXIT_FAIL and not near.decided
    assert criterion.interval is not None and criterion.interval[0] < 0.5 < criterion.interval[1]
    assert "more samples would decide it" in criterion.detail
    run = GateRun(mode="local", checkpoint="m.onnx", samples_used=500,
                  samples_available=500)
    text = markdown(near, run)
    assert "❔ undecided" in text and "0.5200 [0.4752, 0.5646]" in text and "undecided with every sample" in text
    assert "Judged on 500 of 500 test samples" in text
    point = parse_policy({"min_robust_accuracy": WORST, "require_checks_pass": False, "decide": "point"})
    assert judge(outcome_report(bits(450), bits(260)), point).exit_code == EXIT_PASS  # today's rule: 0.52 ≥ 0.5


def test_the_same_model_against_itself_as_baseline_passes_every_time() -> None:
    gate = parse_policy({"min_robust_accuracy": WORST, "max_regression": 0.0, "require_checks_pass": False})
    report = outcome_report(bits(470), bits(300))
    for _ in range(2):
        verdict = judge(report, gate, outcome_report(bits(470), bits(300)))
        assert verdict.exit_code == EXIT_PASS, verdict
        regression = next(c for c in verdict.criteria if c.name == "regression worst_case linf eps=0.1")
        assert regression.p_value == 1.0 and "paired on 500 samples: 0 got worse, 0 better" in regression.detail


def test_noise_passes_and_a_3_point_drop_on_the_same_500_samples_fails_with_its_mcnemar_p() -> None:
    gate = parse_policy({"min_robust_accuracy": WORST, "max_regression": 0.01, "require_checks_pass": False})
    baseline = outcome_report(bits(470), bits(300))
    # 5 samples lost and 3 others gained: a 0.4-point drop, within noise (the point rule would fail it at 0.0)
    noisy = [(i < 300 and i not in range(295, 300)) or i in range(300, 303) for i in range(500)]
    assert judge(outcome_report(bits(470), noisy), gate, baseline).exit_code == EXIT_PASS
    worse = outcome_report(bits(470), bits(285))  # 15 samples of 500 broken that the baseline kept: −3 points
    verdict = judge(worse, gate, baseline)
    assert verdict.exit_code == EXIT_FAIL
    regression = next(c for c in verdict.criteria if c.name == "regression worst_case linf eps=0.1")
    assert regression.status == "fail" and regression.p_value == pytest.approx(0.5 ** 15)
    assert "McNemar p = 3.05e-05" in regression.detail
    run = GateRun(mode="local", checkpoint="m.onnx", report=worse, baseline="main.json", samples_used=500,
                  samples_available=500)
    assert "McNemar p = 3.05e-05" in markdown(verdict, run)
    failure = {c.get("name"): c for c in ET.fromstring(junit_xml(verdict, run)).iter("testcase")}[
        "regression worst_case linf eps=0.1"].find("failure")
    assert failure is not None and "McNemar p = 3.05e-05" in (failure.get("message") or "")
    body = json.loads(verdict_json(verdict, run))
    assert body["samples_used"] == 500 and body["samples_available"] == 500
    assert next(c for c in body["criteria"] if c["name"] == "regression worst_case linf eps=0.1")[
        "p_value"] == pytest.approx(0.5 ** 15)


def test_a_baseline_without_per_sample_outcomes_falls_back_to_the_point_rule_and_says_so() -> None:
    gate = parse_policy({"min_robust_accuracy": WORST, "max_regression": 0.01, "require_checks_pass": False})
    old = outcome_report(bits(470), bits(300))
    old = old.model_copy(update={"runs": [old.runs[0].model_copy(update={"outcomes": None})]})
    verdict = judge(outcome_report(bits(470), bits(296)), gate, old)  # 0.6 → 0.592: a drop of 0.008 ≤ 0.01
    regression = next(c for c in verdict.criteria if c.name == "regression worst_case linf eps=0.1")
    assert regression.status == "pass" and regression.p_value is None
    assert "compared as numbers: the baseline has no per-sample outcomes" in regression.detail
    assert judge(outcome_report(bits(470), bits(290)), gate, old).exit_code == EXIT_FAIL  # 0.02 > 0.01


def test_a_single_attacks_regression_is_paired_on_its_own_outcomes() -> None:
    """`attack: pgd` regressions pair the samples on PGD's own per-sample outcomes (schema 1.3), not
    on the worst case: a PGD drop of 3 points on 500 samples fails with its McNemar p-value."""
    from core.reports import AttackOutcomeBits, pack_bits

    def with_pgd(report: Report, pgd: list[bool]) -> Report:
        run = report.runs[0]
        assert run.outcomes is not None
        rows = [AttackOutcomeBits(attack="pgd", norm="linf", eps=0.1, correct=pack_bits(pgd))]
        robust = [r.model_copy(update={"accuracy": sum(pgd) / len(pgd)}) for r in run.robust]
        run = run.model_copy(update={"robust": robust, "outcomes": run.outcomes.model_copy(update={"attacks": rows})})
        return report.model_copy(update={"runs": [run], "summary": summarize([run], None)})

    from reports.statistics import summarize

    gate = parse_policy({"min_robust_accuracy": [{"attack": "pgd", "norm": "linf", "eps": 0.1, "min": 0.5}],
                         "max_regression": 0.01, "require_checks_pass": False})
    same = outcome_report(bits(470), bits(300))  # the worst case does not change; PGD's outcomes do
    before, after = with_pgd(same, bits(330)), with_pgd(same, bits(315))
    regression = next(c for c in judge(after, gate, before).criteria if c.name == "regression pgd linf eps=0.1")
    assert regression.status == "fail" and regression.p_value is not None and regression.p_value < 0.001
    again = next(c for c in judge(before, gate, before).criteria if c.name == "regression pgd linf eps=0.1")
    assert again.status == "pass" and again.p_value == 1.0
