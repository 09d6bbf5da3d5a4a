"""timm and torchvision architectures by name, with weights from a state_dict file.

The architecture is code from the installed library, chosen by a name that must be one the library
lists (never code from the user); the weights come only from safetensors or a weights_only `.pt`,
checked key by key like our own checkpoints. Models are built on the meta device first, so a
name and a file that do not fit cost nothing before the mismatch is reported.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import torch
from torch import nn

from core.specs.model import TimmModel, TorchvisionModel
from models.checkpoints import check_state, read_state_dict
from models.sources.errors import ModelSourceError

log = logging.getLogger(__name__)


def unknown_name(library: str, name: str, names: list[str]) -> ModelSourceError:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return ModelSourceError(f"{library} has no architecture {name!r}: {hint}"
                            f"see `robustlab list --models {library}` for the {len(names)} names it has")


def library_names(library: str) -> list[str]:
    """Architecture names the installed library offers (classification models for torchvision)."""
    if library == "timm":
        try:
            import timm
        except ImportError:
            raise ModelSourceError("timm is not installed: pip install 'robustlab[models]' (or timm)") from None
        return list(timm.list_models())
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def build_named(spec: TimmModel | TorchvisionModel, device: str | torch.device = "meta") -> nn.Module:
    """The bare network (random weights); on the meta device by default, where nothing is allocated."""
    names = library_names(spec.format)
    if spec.name not in names:
        raise unknown_name(spec.format, spec.name, names)
    channels = spec.channels
    with torch.device(device):
        if spec.format == "timm":
            import timm

            net: nn.Module = timm.create_model(spec.name, pretrained=False, num_classes=spec.num_classes,
                                               in_chans=channels)
            return net
        import torchvision

        if channels != 3:
            raise ModelSourceError(f"torchvision's {spec.name} takes 3-channel images, but input_shape "
                                   f"{spec.input_shape} has {channels}: use timm (in_chans) or 3 channels")
        built: nn.Module = torchvision.models.get_model(spec.name, weights=None, num_classes=spec.num_classes)
        return built


def load_named(path: Path, spec: TimmModel | TorchvisionModel, device: str | torch.device) -> nn.Module:
    """The named architecture with the file's weights, checked, in eval mode on `device`."""
    state = read_state_dict(path)
    check_state(state, build_named(spec).state_dict(), path.name,
                f"{spec.format}:{spec.name} with {spec.num_classes} classes and {spec.channels} input channel(s)",
                hint="save the state_dict of exactly this architecture (model.state_dict()), or fix model.name, "
                "num_classes or input_shape", error=ModelSourceError)
    # Built again for real only now (non-persistent buffers need their constructor values).
    net = build_named(spec, "cpu")
    net.load_state_dict(state, strict=True)
    net = net.to(device)
    log.info("loaded %s:%s weights from %s", spec.format, spec.name, path.name)
    return net.eval()
