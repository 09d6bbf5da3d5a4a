"""What the attacks found on one shard of test samples, and how shards add up to the whole test set.

An evaluation is spread over units of at most `evaluation.shard_size` samples (DESIGN §5): each
unit attacks its samples [start, stop) and writes a `ShardOutcome` as JSON; the job merges them.
Every field is either per sample (by global index) or a sum over samples, so the merged outcome
is the same whatever the shards were: the attacks key their randomness by sample index, never by
position in a batch or a shard (models.attacks.context).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

ADDITIVE_MEMBER_FIELDS = ("attacked", "broken", "pruned", "gradient_evaluations", "forwards", "seconds")


@dataclass
class AttackOutcome:
    """One attack spec on the shard's samples: correct at each radius (E×n bool), and its sums."""

    label: str
    eps: list[float]
    correct: Tensor  # E×n bool
    white_correct: Tensor | None  # a suite's correct before its black-box member
    gradient_evaluations: int = 0
    forwards: int = 0
    seconds: float = 0.0
    members: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)


@dataclass
class ShardOutcome:
    """Samples [start, stop) of the evaluated test set."""

    start: int
    stop: int
    clean_correct: Tensor  # n bool
    attacks: list[AttackOutcome]
    gradient: dict[str, float]  # samples, zero, nonfinite, zero_entries, entries: sums over samples
    eot: int = 1
    seconds: float = 0.0

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> str:
        def bits(t: Tensor | None) -> list[list[int]] | list[int] | None:
            return None if t is None else t.to(torch.uint8).tolist()

        attacks = []
        for a in self.attacks:
            row = asdict(a) | {"correct": bits(a.correct), "white_correct": bits(a.white_correct)}
            attacks.append(row)
        return json.dumps({"start": self.start, "stop": self.stop, "clean_correct": bits(self.clean_correct),
                           "attacks": attacks, "gradient": self.gradient, "eot": self.eot, "seconds": self.seconds})

    @classmethod
    def from_json(cls, text: str) -> ShardOutcome:
        raw = json.loads(text)

        def mask(values: Any, rows: int | None = None) -> Tensor:
            tensor = torch.tensor(values, dtype=torch.bool)
            return tensor.reshape(rows, -1) if rows is not None else tensor

        attacks = [AttackOutcome(label=a["label"], eps=a["eps"], correct=mask(a["correct"], len(a["eps"])),
                                 white_correct=None if a["white_correct"] is None else
                                 mask(a["white_correct"], len(a["eps"])),
                                 gradient_evaluations=a["gradient_evaluations"], forwards=a["forwards"],
                                 seconds=a["seconds"], members=a["members"], diagnostics=a["diagnostics"])
                   for a in raw["attacks"]]
        return cls(start=raw["start"], stop=raw["stop"], clean_correct=mask(raw["clean_correct"]), attacks=attacks,
                   gradient=raw["gradient"], eot=raw.get("eot", 1), seconds=raw.get("seconds", 0.0))


def shard_ranges(samples: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard of `samples` test samples."""
    return [(start, min(start + shard_size, samples)) for start in range(0, samples, shard_size)]


def _merged_members(shards: list[ShardOutcome], index: int) -> list[dict[str, Any]]:
    """A spec's suite members summed over shards, keyed by (member, ε), in the order a whole-set run
    records them: by radius, then as they first appear (a member that ran in some shards only, such
    as the escalated Square, still lands right after the members before it)."""
    merged: dict[tuple[str, float], dict[str, Any]] = {}
    for shard in shards:
        for member in shard.attacks[index].members:
            key = (str(member["member"]), float(member["eps"]))
            if key not in merged:
                merged[key] = dict(member)
                continue
            for name in ADDITIVE_MEMBER_FIELDS:
                if name in member:
                    merged[key][name] = merged[key].get(name, 0) + member[name]
    return sorted(merged.values(), key=lambda m: float(m["eps"]))


def merge_shards(shards: list[ShardOutcome]) -> ShardOutcome:
    """The shards (any order, together covering 0 … N−1 without gaps) as one outcome."""
    shards = sorted(shards, key=lambda s: s.start)
    for before, after in itertools.pairwise(shards):
        if before.stop != after.start:
            raise ValueError(f"evaluation shards do not fit together: [{before.start}, {before.stop}) is followed "
                             f"by [{after.start}, {after.stop})")
    if not shards or shards[0].start != 0:
        raise ValueError("the evaluation shards do not start at sample 0")
    attacks = []
    for i, first in enumerate(shards[0].attacks):
        parts = [s.attacks[i] for s in shards]
        white = None if all(p.white_correct is None for p in parts) else torch.cat(
            [p.white_correct if p.white_correct is not None else p.correct for p in parts], dim=1)
        diagnostics: dict[str, float] = {}
        for p in parts:
            for key, value in p.diagnostics.items():
                diagnostics[key] = diagnostics.get(key, 0.0) + value
        attacks.append(AttackOutcome(
            label=first.label, eps=first.eps, correct=torch.cat([p.correct for p in parts], dim=1),
            white_correct=white, gradient_evaluations=sum(p.gradient_evaluations for p in parts),
            forwards=sum(p.forwards for p in parts), seconds=sum(p.seconds for p in parts),
            members=_merged_members(shards, i), diagnostics=diagnostics))
    gradient: dict[str, float] = {}
    for s in shards:
        for key, value in s.gradient.items():
            gradient[key] = gradient.get(key, 0.0) + value
    return ShardOutcome(start=0, stop=shards[-1].stop, clean_correct=torch.cat([s.clean_correct for s in shards]),
                        attacks=attacks, gradient=gradient, eot=max(s.eot for s in shards),
                        seconds=sum(s.seconds for s in shards))
