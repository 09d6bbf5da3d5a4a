"""Job specs: the example validates as written, specs are frozen and closed, and every bad input
produces a problem that names the field at fault and says what would be right."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from core.enums import AttackKind, RegularizerKind
from core.specs import ExperimentSpec, SpecError, load_spec, parse_spec
from core.specs.loading import Problem

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits-quick.yaml"

Data = dict[str, Any]


@pytest.fixture(scope="module")
def raw() -> Data:
    data: Data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def example() -> ExperimentSpec:
    return load_spec(EXAMPLE)


def _problems(data: Any) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.problems


# --- the example ---------------------------------------------------------------------------------


def test_example_validates_exactly_as_written(example: ExperimentSpec, raw: Data) -> None:
    # Nothing coerced, reordered or dropped: what was set dumps back to the file's content.
    assert example.model_dump(mode="json", exclude_unset=True) == raw
    assert example.name == "digits-quick"
    assert (example.dataset.name, example.model.architecture) == ("digits", "mlp")
    assert example.training.epochs == 20 and example.training.schedule == "cosine"
    assert len(example.regularizers) == 12
    assert example.seeds == [0, 1, 2]
    assert [a.kind for a in example.evaluation.attacks] == ["fgsm", "pgd", "pgd"]
    kinds = {r.kind for r in example.regularizers}
    assert kinds == set(RegularizerKind) - {RegularizerKind.WEIGHT_DECAY}


def test_teacher_is_trained_before_its_student(example: ExperimentSpec) -> None:
    order = example.training_order()
    assert sorted(order) == sorted(r.name for r in example.regularizers)
    assert example.regularizer("sobolev").teacher == "erm"  # type: ignore[union-attr]
    assert order.index("erm") < order.index("sobolev")


def test_training_order_moves_a_teacher_listed_after_its_student(raw: Data) -> None:
    data = copy.deepcopy(raw)
    data["regularizers"] = [
        {"name": "student", "kind": "sobolev", "teacher": "middle"},
        {"name": "middle", "kind": "sobolev", "teacher": "base"},
        {"name": "base", "kind": "none"},
    ]
    assert parse_spec(data).training_order() == ["base", "middle", "student"]


def test_spec_hash_is_stable_across_dump_and_reload(example: ExperimentSpec, tmp_path: Path) -> None:
    digest = example.spec_hash()
    assert len(digest) == 64 and digest == load_spec(EXAMPLE).spec_hash()
    assert ExperimentSpec.model_validate_json(example.model_dump_json()).spec_hash() == digest
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(yaml.safe_dump(example.model_dump(mode="json")), encoding="utf-8")
    assert load_spec(dumped).spec_hash() == digest
    as_json = tmp_path / "dumped.json"  # tab-indented: fine in JSON, though YAML forbids tab indentation
    as_json.write_text(json.dumps(example.model_dump(mode="json"), indent="\t"), encoding="utf-8")
    assert load_spec(as_json).spec_hash() == digest


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["training"].update(epochs=21),
        lambda d: d["regularizers"][1].update(weight=5.5),
        lambda d: d.update(seeds=[0, 1, 3]),
        lambda d: d["evaluation"]["attacks"][0].update(eps=[0.02, 0.05, 0.1]),
        lambda d: d["regularizers"][1].update(name="double"),
    ],
    ids=["epochs", "weight", "seeds", "eps", "run-name"],
)
def test_spec_hash_changes_with_any_field(
    raw: Data, example: ExperimentSpec, change: Callable[[Data], Any]
) -> None:
    data = copy.deepcopy(raw)
    change(data)
    assert parse_spec(data).spec_hash() != example.spec_hash()


# Fields each regularizer kind cannot do without (the rest take their defaults).
REQUIRED_EXTRAS: dict[str, Data] = {
    "sobolev": {"teacher": "erm"},
    "maxup": {"sigma": 0.1},
    "adversarial_training": {"eps": 0.1},
}


@pytest.mark.parametrize("kind", [k.value for k in RegularizerKind])
def test_a_full_dump_of_every_kind_loads_again(kind: str) -> None:
    # Specs travel as JSON with their defaults filled in (Redis, checkpoints, reports): a dump must
    # validate again to the same spec, or a worker could not read back what the service accepted.
    reg = {"name": "run", "kind": kind, **REQUIRED_EXTRAS.get(kind, {})}
    spec = parse_spec({
        "name": "roundtrip", "dataset": {"name": "digits"}, "model": {"architecture": "mlp"},
        "regularizers": [{"name": "erm", "kind": "none"}, reg] if kind != "none" else [reg],
        "evaluation": {"attacks": [{"kind": k.value, "eps": [0.1]} for k in AttackKind]},
    })
    again = parse_spec(spec.model_dump(mode="json"))
    assert again == spec and again.spec_hash() == spec.spec_hash()


def test_specs_are_frozen(example: ExperimentSpec) -> None:
    with pytest.raises(ValidationError):
        example.name = "renamed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        example.training.epochs = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        example.regularizers[1].weight = 0.0  # type: ignore[misc,union-attr]
    assert example.training.epochs == 20


@pytest.mark.parametrize(
    ("where", "path"),
    [
        (lambda d: d, "colour"),
        (lambda d: d["training"], "training.colour"),
        (lambda d: d["regularizers"][2], "regularizers[2].colour"),
        (lambda d: d["model"]["params"], "model.params.colour"),
        (lambda d: d["evaluation"]["attacks"][1], "evaluation.attacks[1].colour"),
    ],
    ids=["top", "training", "regularizer", "params", "attack"],
)
def test_extra_fields_are_rejected(raw: Data, where: Callable[[Data], Data], path: str) -> None:
    data = copy.deepcopy(raw)
    where(data)["colour"] = "red"
    assert [p.path for p in _problems(data)] == [path]


# --- bad inputs: each names the field and says what would be right ---------------------------------


def _second_sobolev(d: Data) -> None:
    d["regularizers"][9]["teacher"] = "sobolev-2"
    d["regularizers"].append({"name": "sobolev-2", "kind": "sobolev", "teacher": "sobolev"})


BAD_INPUTS: list[tuple[str, Callable[[Data], Any], str, list[str]]] = [
    ("negative-weight", lambda d: d["regularizers"][1].update(weight=-1.0),
     "regularizers[1].weight", ["greater than or equal to 0", "-1.0"]),
    ("unknown-kind", lambda d: d["regularizers"][1].update(kind="double_backprob"),
     "regularizers[1].kind", ["unknown kind 'double_backprob'", "did you mean 'double_backprop'",
                              *(f"'{k.value}'" for k in RegularizerKind)]),
    ("typo-field", lambda d: d["regularizers"][1].update(wieght=5.0),
     "regularizers[1].wieght", ["unknown field 'wieght'", "did you mean 'weight'"]),
    ("typo-top-level", lambda d: d.update(seed=d.pop("seeds")),
     "seed", ["unknown field 'seed'", "did you mean 'seeds'"]),
    ("missing-dataset", lambda d: d.pop("dataset"), "dataset", ["required field is missing"]),
    ("missing-teacher", lambda d: d["regularizers"][9].pop("teacher"),
     "regularizers[9].teacher", ["required field is missing", "run name, uploaded model id"]),
    ("missing-kind", lambda d: d["regularizers"][3].pop("kind"),
     "regularizers[3].kind", ["required field is missing", "'datagrad_l1'"]),
    ("duplicate-run-names", lambda d: d["regularizers"][4].update(name="spectreg"),
     "regularizers[5].name", ["must be unique", "'spectreg'", "regularizers[4]", "rename"]),
    ("duplicate-seeds", lambda d: d.update(seeds=[0, 1, 1]), "seeds", ["repeat", "list each seed once"]),
    ("teacher-unknown", lambda d: d["regularizers"][9].update(teacher="ermm"),
     "regularizers[9].teacher", ["'ermm' is neither a run", "erm, doubleback", ".safetensors"]),
    ("teacher-itself", lambda d: d["regularizers"][9].update(teacher="sobolev"),
     "regularizers[9].teacher", ["names itself", "name another run"]),
    ("teacher-cycle", _second_sobolev,
     "regularizers[12].teacher", ["cycle", "sobolev -> sobolev-2 -> sobolev", "outside the cycle"]),
    ("maxup-without-sigma", lambda d: d["regularizers"][8].pop("sigma"),
     "regularizers[8].sigma", ["needs sigma", "sigma: 0.1"]),
    ("fgsm-with-steps", lambda d: d["regularizers"][10].update(steps=3),
     "regularizers[10].steps", ["fgsm takes one step", "attack: pgd"]),
    ("linf-eps-above-1", lambda d: d["evaluation"]["attacks"][1].update(eps=[0.1, 1.5]),
     "evaluation.attacks[1].eps", ["exceeds 1", "(0, 1]"]),
    ("wide-resnet-depth", lambda d: d.update(model={"architecture": "wide_resnet", "params": {"depth": 27}}),
     "model.params.depth", ["not 6n+4", "28"]),
    ("conv-on-vectors", lambda d: d.update(model={"architecture": "lenet5"}, dataset={"name": "synthetic"}),
     "model.architecture", ["needs images", "use architecture 'mlp'"]),
    ("confidence-on-regression",
     lambda d: d.update(dataset={"name": "function_regression"},
                        regularizers=[{"name": "cnf", "kind": "confidence_penalty"}]),
     "regularizers[0].kind", ["class probabilities", "use double_backprop or sobolev"]),
    ("milestones-decreasing", lambda d: d["training"].update(schedule="step", milestones=[0.75, 0.5]),
     "training.milestones", ["increasing", "[0.5, 0.75]"]),
    ("unknown-architecture", lambda d: d["model"].update(architecture="vgg"),
     "model.architecture", ["unknown architecture 'vgg'", "'wide_resnet'"]),
    ("dataset-as-bare-name", lambda d: d.update(dataset="digits"), "dataset", ["{name: digits}"]),
    ("normalization-word", lambda d: d["model"].update(normalization="batch"),
     "model.normalization", ["'batch'", "'dataset'", "'none'", "mean"]),
    ("bad-run-name", lambda d: d["regularizers"][0].update(name="e r m"),
     "regularizers[0].name", ["'e r m'", "letters, digits"]),
]


@pytest.mark.parametrize(
    ("change", "path", "fragments"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_names_the_field_and_the_fix(
    raw: Data, change: Callable[[Data], Any], path: str, fragments: list[str]
) -> None:
    data = copy.deepcopy(raw)
    change(data)
    problems = _problems(data)
    at_path = [p for p in problems if p.path == path]
    assert at_path, f"no problem at {path!r}; got {[str(p) for p in problems]}"
    message = at_path[0].message
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{path}: {message!r} lacks {missing}"


def test_every_problem_is_reported_at_once(raw: Data) -> None:
    data = copy.deepcopy(raw)
    data["regularizers"][1]["weight"] = -1
    data["training"]["epochs"] = 0
    data["evaluation"]["attacks"][0]["kind"] = "cw"
    assert {p.path for p in _problems(data)} == {
        "regularizers[1].weight", "training.epochs", "evaluation.attacks[0].kind"
    }


@pytest.mark.parametrize("data", [None, [1, 2], "digits-quick"], ids=["empty", "list", "text"])
def test_a_spec_must_be_a_mapping(data: Any) -> None:
    (problem,) = _problems(data)
    assert problem.path == "" and "a spec is a mapping of fields" in problem.message


# --- files: YAML syntax, duplicate keys, anchors ---------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _file_problems(path: Path) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.source == str(path)
    return info.value.problems


def test_bad_yaml_syntax_says_where(tmp_path: Path) -> None:
    (problem,) = _file_problems(_write(tmp_path, "name: x\nseeds: [0, 1\nmodel: {architecture: mlp}\n"))
    assert problem.path == ""
    assert "not valid YAML at line 3" in problem.message and "fix the syntax" in problem.message


def test_duplicate_yaml_key_is_a_problem(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "{name: doubleback, kind: double_backprop, weight: 5.0}",
        "{name: doubleback, kind: double_backprop, weight: 5.0, weight: 50.0}",
    ) + "seeds: [4]\n"
    problems = _file_problems(_write(tmp_path, text))
    assert [p.path for p in problems] == ["regularizers[1].weight", "seeds"]
    assert "duplicate key 'weight'" in problems[0].message and "keep one" in problems[0].message
    assert "first given at line" in problems[1].message


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, """
name: anchors
dataset: {name: digits}
model: {architecture: mlp}
regularizers:
  - &db {name: db, kind: double_backprop, weight: 1.0}
  - {<<: *db, name: db-strong, weight: 10.0}
evaluation:
  attacks:
    - {kind: fgsm, eps: &eps [0.1, 0.2]}
    - {kind: pgd, eps: *eps}
"""))
    assert [(r.name, r.weight) for r in spec.regularizers] == [("db", 1.0), ("db-strong", 10.0)]  # type: ignore[union-attr]
    assert spec.evaluation.attacks[1].eps == [0.1, 0.2]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "cannot read the file"), (b"\xff\xfe\x00", "not UTF-8"), (b"", "empty document"),
     (b"a: 1\n---\nb: 2\n", "single document")],
    ids=["missing", "binary", "empty", "two-documents"],
)
def test_unreadable_files_give_one_problem(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "spec.yaml"
    if content is not None:
        path.write_bytes(content)
    (problem,) = _file_problems(path)
    assert fragment in problem.message
