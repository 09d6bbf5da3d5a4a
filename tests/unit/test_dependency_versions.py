"""What an install following the docs gets: no dependency with a known CVE under our HTTP stack.

torchattacks 3.5.1 pins requests~=2.25.1 (CVE-2024-35195, CVE-2024-47081) and through it idna<3
(CVE-2024-3651); constraints/security.txt is installed over that pin (Dockerfile, docs/deploy.md).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _version(package: str) -> tuple[int, ...]:
    return tuple(int(part) for part in importlib.metadata.version(package).split(".")[:3] if part.isdigit())


def test_requests_and_idna_are_past_their_cves() -> None:
    assert _version("requests") >= (2, 32, 4)
    assert _version("idna") >= (3, 7)


def test_torchattacks_imports_beside_them() -> None:
    import torchattacks

    assert hasattr(torchattacks, "Square") and hasattr(torchattacks, "AutoAttack")


def test_the_image_installs_the_security_constraints() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert dockerfile.count("pip install -r constraints/security.txt") == 2
    assert "requests>=2.32.4" in (REPO / "constraints" / "security.txt").read_text(encoding="utf-8")
