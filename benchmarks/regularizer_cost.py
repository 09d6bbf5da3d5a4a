"""Step time and memory of every regularizer against ERM, on the same model and batch, in one run.

    python benchmarks/regularizer_cost.py                      # lenet5 28×28 + cnn_small, batch 128
    python benchmarks/regularizer_cost.py --repeats 30 --json out.json

A step is objective + backward + optimizer step. Regularizers are timed round-robin (one step of
each in turn, many rounds) so that machine noise hits all of them alike; the table reports the
median step time and its ratio to ERM's median. Memory: bytes of the distinct tensors autograd
saves for the backward pass of one step (the activation memory a step needs; on CUDA also the
peak allocated). Inputs: MNIST test images when ../shared/data/mnist is present, else uniform noise.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from pydantic import TypeAdapter

from core.enums import Task
from core.specs.regularizers import RegularizerSpec
from models.architectures import build_model
from models.regularizers import Batch, build_regularizer

SPECS = [
    {"name": "erm", "kind": "none"},
    {"name": "double_backprop", "kind": "double_backprop", "weight": 1.0},
    {"name": "double_backprop_fd", "kind": "double_backprop", "weight": 1.0, "method": "finite_difference"},
    {"name": "datagrad_l1", "kind": "datagrad_l1"},
    {"name": "spectral", "kind": "spectral"},
    {"name": "jacobian_exact", "kind": "jacobian", "target": "softmax"},
    {"name": "jacobian_1proj", "kind": "jacobian", "target": "softmax", "projections": 1},
    {"name": "confidence_penalty", "kind": "confidence_penalty"},
    {"name": "input_hessian_1it", "kind": "input_hessian", "power_iterations": 1},
    {"name": "input_hessian_cure", "kind": "input_hessian", "method": "finite_difference"},
    {"name": "sobolev", "kind": "sobolev", "teacher": "erm", "projections": 1},
    {"name": "maxup_4", "kind": "maxup", "copies": 4, "sigma": 0.1},
    {"name": "fgsm_at", "kind": "adversarial_training", "attack": "fgsm", "eps": 0.1},
    {"name": "pgd7_at", "kind": "adversarial_training", "attack": "pgd", "eps": 0.1, "steps": 7},
]
# Targets of the issue, as (name, reference, max ratio); reference "erm" or another row.
TARGETS = [
    ("double_backprop_fd", "erm", 2.0),
    ("double_backprop", "erm", 4.0),
    ("spectral", "erm", 4.0),
    ("datagrad_l1", "erm", 4.0),
    ("input_hessian_1it", "double_backprop", 2.0),
]
MODELS = {
    "lenet5": ("lenet5", {}),
    "cnn_small": ("cnn_small", {"channels": [32, 64], "hidden": 256}),
}


def load_inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    mnist = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    images, labels = mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        import gzip

        import numpy as np

        with gzip.open(images) as f_images, gzip.open(labels) as f_labels:
            x = np.frombuffer(f_images.read(), dtype=np.uint8, offset=16)[: batch * 784]
            y = np.frombuffer(f_labels.read(), dtype=np.uint8, offset=8)[:batch]
        xt = torch.from_numpy(x.copy()).float().div(255).view(batch, 1, 28, 28)
        return xt, torch.from_numpy(y.copy()).long(), "MNIST test images"
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g), "noise"


def saved_tensor_bytes(step) -> int:
    """Bytes of the distinct storages autograd saves during one step."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


def benchmark(arch: str, params: dict, x: torch.Tensor, y: torch.Tensor, repeats: int, device: torch.device):
    torch.manual_seed(0)
    base = build_model(arch, params, tuple(x.shape[1:]), 10, None, None).to(device)
    teacher = copy.deepcopy(base).eval()
    x, y = x.to(device), y.to(device)
    adapter = TypeAdapter(RegularizerSpec)
    runners = {}
    for raw in SPECS:
        spec = adapter.validate_python(raw)
        model = copy.deepcopy(base).train()
        reg = build_regularizer(spec, Task.CLASSIFICATION, teacher)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        gen = torch.Generator(device=device).manual_seed(0)

        def step(model=model, reg=reg, opt=opt, gen=gen) -> None:
            opt.zero_grad(set_to_none=True)
            reg.objective(model, Batch(x, y), gen).loss.backward(inputs=list(model.parameters()))
            opt.step()

        runners[spec.name] = step
    memory = {name: saved_tensor_bytes(step) for name, step in runners.items()}
    for step in runners.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, step in runners.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        name: {
            "median_ms": 1000 * median[name],
            "ratio_to_erm": median[name] / median["erm"],
            "saved_mb": memory[name] / 2**20,
            "memory_ratio_to_erm": memory[name] / memory["erm"],
        }
        for name in runners
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x, y, source = load_inputs(args.batch)
    print(f"inputs: {source}, batch {args.batch}, device {device}, {args.threads} threads, "
          f"{args.repeats} rounds, torch {torch.__version__}")
    report = {}
    for key in args.models:
        arch, params = MODELS[key]
        rows = benchmark(arch, params, x, y, args.repeats, device)
        report[key] = rows
        print(f"\n{key} {params or ''}")
        print("| regularizer | step ms | × ERM | saved MB | mem × ERM |\n|---|---:|---:|---:|---:|")
        for name, r in rows.items():
            print(f"| {name} | {r['median_ms']:.1f} | {r['ratio_to_erm']:.2f} | {r['saved_mb']:.1f} "
                  f"| {r['memory_ratio_to_erm']:.2f} |")
        print("\ntargets:")
        for name, ref, limit in TARGETS:
            ratio = rows[name]["median_ms"] / rows[ref]["median_ms"]
            verdict = "met" if ratio <= limit else f"MISSED by {ratio / limit - 1:.0%}"
            print(f"  {name} ≤ {limit}× {ref}: {ratio:.2f}× — {verdict}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
