"""ERM images/s of the training loop `robustlab compare` runs, against a bare PyTorch loop.

    python benchmarks/loop_throughput.py                                  # lenet5, MNIST, CPU
    python benchmarks/loop_throughput.py --model resnet18 --batch 256 --samples 8192 --device cuda --amp

Same model, data, batch size, optimizer (Adam, constant lr) and device for both:
- bare: the data on the device, a shuffled index per epoch, forward, cross-entropy, backward,
  Adam step, nothing else (no progress, no checkpoints);
- compare: `train_experiment` with an ERM-only spec, the function `compare` trains with (per-epoch
  state files, progress callback and all), timed by its own `FitResult.seconds`.
Rounds alternate (bare, compare, bare, compare, …) and the best round of each counts, so a noisy
machine hurts both alike. Target (issue 12): compare ≥ 70 % of the bare loop's images/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from regularizer_cost import INPUT_SHAPES, MODELS, load_inputs

from core.enums import Task
from core.specs import parse_spec
from models.architectures import build_from_spec
from models.datasets.base import DatasetBundle
from models.training.experiment import train_experiment
from models.training.loop import ProgressEvent, autocast_context

TARGET = 0.70


def bundle(model: str, samples: int) -> DatasetBundle:
    x, y, _ = load_inputs(samples, INPUT_SHAPES.get(model, (1, 28, 28)))
    return DatasetBundle("bench", Task.CLASSIFICATION, x, y, x[:64], y[:64], 10)


def spec_for(model: str, epochs: int, batch: int, amp: bool, device: str):
    arch, params = MODELS[model]
    return parse_spec({
        "name": "loop-throughput",
        "dataset": {"name": "digits"},  # a placeholder: the bundle is passed in
        "model": {"architecture": arch, "params": params},
        "training": {"epochs": epochs, "batch_size": batch, "optimizer": "adam", "lr": 1e-3,
                     "schedule": "constant", "amp": amp, "device": device},
        "regularizers": [{"name": "erm", "kind": "none"}],
        "seeds": [0],
    })


def bare_loop(spec, data: DatasetBundle, device: torch.device, amp: bool) -> float:
    """Images/s of the plainest loop over the same data, model and optimizer."""
    torch.manual_seed(0)
    model = build_from_spec(spec.model, data.input_shape, data.num_outputs, data.channel_stats()).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.training.lr)
    x, y = data.x_train.to(device), data.y_train.to(device)
    n, batch = x.shape[0], spec.training.batch_size
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(spec.training.epochs):
        order = torch.randperm(n, device=device)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            with autocast_context(device, amp and device.type == "cuda"):  # as fit: spec amp is CUDA-only
                loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * spec.training.epochs / (time.perf_counter() - start)


def compare_loop(spec, data: DatasetBundle, device: torch.device) -> tuple[float, float]:
    """Images/s of ERM inside `compare`'s training (`train_experiment`), progress callback on:
    in all, and without the time spent writing the per-epoch resume state."""
    events: list[ProgressEvent] = []
    with tempfile.TemporaryDirectory() as out:
        (run,) = train_experiment(spec, Path(out), device=str(device), data=data,
                                  progress=lambda name, seed: events.append)
    assert run.fit is not None and events
    images = data.x_train.shape[0] * spec.training.epochs
    return images / run.fit.seconds, images / (run.fit.seconds - run.fit.state_seconds)


def measure(model: str, samples: int, epochs: int, batch: int, device: torch.device, amp: bool,
            rounds: int) -> dict:
    data = bundle(model, samples)
    spec = spec_for(model, epochs, batch, amp, device.type)
    warm = spec_for(model, 1, batch, amp, device.type)
    bare_loop(warm, data, device, amp)  # kernels, allocator, autotuning
    bare, inside, steps_only = [], [], []
    for _ in range(rounds):
        bare.append(bare_loop(spec, data, device, amp))
        in_all, without_state = compare_loop(spec, data, device)
        inside.append(in_all)
        steps_only.append(without_state)
    ratio = max(inside) / max(bare)
    return {"model": model, "device": str(device), "amp": amp, "samples": samples, "epochs": epochs,
            "batch": batch, "bare_images_per_s": max(bare), "compare_images_per_s": max(inside),
            "compare_without_state_writes_images_per_s": max(steps_only),
            "ratio": ratio, "ratio_without_state_writes": max(steps_only) / max(bare),
            "target": TARGET, "met": ratio >= TARGET,
            "rounds": {"bare": bare, "compare": inside, "compare_without_state_writes": steps_only}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5", choices=list(MODELS))
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast in both loops")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    r = measure(args.model, args.samples, args.epochs, args.batch, torch.device(args.device), args.amp, args.rounds)
    print(f"{r['model']} on {r['device']} (amp {r['amp']}), {r['samples']} images × {r['epochs']} epochs, "
          f"batch {r['batch']}: bare {r['bare_images_per_s']:,.0f}/s, compare {r['compare_images_per_s']:,.0f}/s "
          f"= {r['ratio']:.0%} of bare (target ≥ {TARGET:.0%}: {'met' if r['met'] else 'MISSED'}); "
          f"without the per-epoch state writes {r['ratio_without_state_writes']:.0%}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
