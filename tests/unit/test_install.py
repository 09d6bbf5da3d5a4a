"""The CPU install gives users a torchvision (and timm) that import beside the CPU torch build."""

from __future__ import annotations

import subprocess
import sys


def test_torchvision_and_timm_import_and_build_models_in_a_fresh_interpreter() -> None:
    code = ("import torch, torchvision, timm; "
            "print(tuple(torchvision.models.resnet18(num_classes=3).eval()(torch.rand(1, 3, 32, 32)).shape)); "
            "print(tuple(timm.create_model('test_resnet', num_classes=3).eval()(torch.rand(1, 3, 32, 32)).shape))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["(1,", "3)", "(1,", "3)"]
