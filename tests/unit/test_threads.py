"""The local commands and robustlab.evaluate pick torch's thread count for the machine: --threads wins,
then a user's OMP_NUM_THREADS, then the cores this process may use (affinity, cgroup quota)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustlab.threads import MAX_THREADS, _quota_cores, apply_threads, available_cores, choose_threads, default_threads


def test_threads_option_wins_then_omp_num_threads_then_the_cores() -> None:
    assert choose_threads(3, {"OMP_NUM_THREADS": "5"}, cores=16).threads == 3
    chosen = choose_threads(None, {"OMP_NUM_THREADS": "5"}, cores=16)
    assert (chosen.threads, chosen.reason) == (5, "OMP_NUM_THREADS")
    chosen = choose_threads(None, {}, cores=16)
    assert chosen.threads == default_threads(16) and chosen.reason == "16 cores available"
    assert choose_threads(None, {"OMP_NUM_THREADS": "lots"}, cores=4).threads == default_threads(4)  # ignored
    with pytest.raises(ValueError, match="at least 1"):
        choose_threads(0, {}, cores=4)


def test_the_default_is_half_the_cores_capped() -> None:
    assert [default_threads(c) for c in (1, 2, 3, 4, 8)] == [1, 1, 1, 2, 4]
    assert default_threads(256) == MAX_THREADS


def test_a_cgroup_quota_limits_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # docker --cpus 1.5
    assert _quota_cores(cpu_max) == 2 and available_cores(cpu_max) <= 2
    cpu_max.write_text("max 100000\n")
    assert _quota_cores(cpu_max) is None and available_cores(cpu_max) >= 1
    assert _quota_cores(tmp_path / "absent") is None


def test_apply_threads_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert apply_threads(2).threads == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert apply_threads().threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
