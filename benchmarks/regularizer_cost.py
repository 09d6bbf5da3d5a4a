"""Step time and memory of every regularizer against ERM, on the same model and batch, in one run.

    python benchmarks/regularizer_cost.py                      # lenet5 28×28 + cnn_small, batch 128
    python benchmarks/regularizer_cost.py --repeats 30 --json out.json
    python benchmarks/regularizer_cost.py --models resnet18 --batch 256 --device cuda --amp   # a GPU

A step is objective + backward + optimizer step. Regularizers are timed round-robin (one step of
each in turn, many rounds) so that machine noise hits all of them alike; the table reports the
median step time and its ratio to ERM's median. Memory: bytes of the distinct tensors autograd
saves for the backward pass of one step (the activation memory a step needs; on CUDA also the
peak allocated). Inputs: MNIST test images when ../shared/data/mnist is present (1×28×28 models),
else uniform noise (always for resnet18, 3×32×32). Batches name their samples (indices 0…B−1), as
the training loop's do, so regularizers that carry per-sample state (the input Hessian) are timed
in their steady state.
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
    {"name": "double_backprop_fd_carried", "kind": "double_backprop", "weight": 1.0, "method": "finite_difference",
     "gradient": "carried"},
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
# Targets of issue 12, as (name, reference, max ratio); reference "erm" or another row.
TARGETS = [
    ("double_backprop", "erm", 3.0),
    ("spectral", "erm", 3.0),
    ("jacobian_1proj", "erm", 3.0),
    ("datagrad_l1", "erm", 3.0),
    ("double_backprop_fd", "erm", 2.0),
    ("double_backprop_fd_carried", "erm", 2.0),
    ("input_hessian_1it", "double_backprop", 2.0),
    ("input_hessian_cure", "double_backprop", 1.5),
]
MODELS = {
    "lenet5": ("lenet5", {}),
    "cnn_small": ("cnn_small", {"channels": [32, 64], "hidden": 256}),
    "resnet18": ("resnet18", {}),  # PreAct ResNet-18, 3×32×32 noise inputs
}
INPUT_SHAPES = {"resnet18": (3, 32, 32)}


def load_inputs(batch: int, shape: tuple[int, ...] = (1, 28, 28)) -> tuple[torch.Tensor, torch.Tensor, str]:
    mnist = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    images, labels = mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz"
    if shape == (1, 28, 28) and images.exists() and labels.exists() and batch <= 10_000:
        import gzip

        import numpy as np

        with gzip.open(images) as f_images, gzip.open(labels) as f_labels:
            x = np.frombuffer(f_images.read(), dtype=np.uint8, offset=16)[: batch * 784]
            y = np.frombuffer(f_labels.read(), dtype=np.uint8, offset=8)[:batch]
        xt = torch.from_numpy(x.copy()).float().div(255).view(batch, 1, 28, 28)
        return xt, torch.from_numpy(y.copy()).long(), "MNIST test images"
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g), "noise"


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


def benchmark(arch: str, params: dict, x: torch.Tensor, y: torch.Tensor, repeats: int, device: torch.device,
              amp: bool = False, channels_last: bool = False, names: list[str] | None = None) -> dict:
    """Median step time (and saved-tensor memory) of each regularizer in SPECS, round-robin.

    `amp`: bf16 autocast around the objective, as the training loop does; `channels_last`: model
    and inputs in NHWC; `names`: only these rows (ERM always included).
    """
    torch.manual_seed(0)
    base = build_model(arch, params, tuple(x.shape[1:]), 10, None, None).to(device)
    if channels_last:
        base = base.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    teacher = copy.deepcopy(base).eval()
    x, y = x.to(device), y.to(device)
    batch = Batch(x, y, index=torch.arange(x.shape[0]))
    adapter = TypeAdapter(RegularizerSpec)
    runners = {}
    for raw in SPECS:
        if names is not None and raw["name"] not in names and raw["name"] != "erm":
            continue
        spec = adapter.validate_python(raw)
        model = copy.deepcopy(base).train()
        reg = build_regularizer(spec, Task.CLASSIFICATION, teacher)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        gen = torch.Generator(device=device).manual_seed(0)

        def step(model=model, reg=reg, opt=opt, gen=gen) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                objective = reg.objective(model, batch, gen)
            objective.loss.backward(inputs=[*model.parameters(), *objective.probes])
            opt.step()

        runners[spec.name] = step
    for step in runners.values():  # warm-up (and the first visit of every sample)
        step()
    memory = {name: saved_tensor_bytes(step) for name, step in runners.items()}  # in the steady state
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


def verdicts(rows: dict) -> list[dict]:
    """Each target of the issue that this table can judge, with its ratio and whether it is met."""
    out = []
    for name, ref, limit in TARGETS:
        if name in rows and ref in rows:
            ratio = rows[name]["median_ms"] / rows[ref]["median_ms"]
            out.append({"name": name, "reference": ref, "limit": limit, "ratio": ratio, "met": ratio <= limit})
    return out


def print_table(title: str, rows: dict) -> None:
    print(f"\n{title}")
    print("| regularizer | step ms | × ERM | saved MB | mem × ERM |\n|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['median_ms']:.1f} | {r['ratio_to_erm']:.2f} | {r['saved_mb']:.1f} "
              f"| {r['memory_ratio_to_erm']:.2f} |")
    print("\ntargets:")
    for v in verdicts(rows):
        verdict = "met" if v["met"] else f"MISSED by {v['ratio'] / v['limit'] - 1:.0%}"
        print(f"  {v['name']} ≤ {v['limit']}× {v['reference']}: {v['ratio']:.2f}× — {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["lenet5", "cnn_small"], choices=list(MODELS))
    parser.add_argument("--only", nargs="+", help="only these regularizer rows (ERM always runs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast around the objective")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"batch {args.batch}, device {device}, {args.threads} threads, {args.repeats} rounds, "
          f"amp {args.amp}, channels_last {args.channels_last}, torch {torch.__version__}")
    report = {}
    for key in args.models:
        arch, params = MODELS[key]
        x, y, source = load_inputs(args.batch, INPUT_SHAPES.get(key, (1, 28, 28)))
        rows = benchmark(arch, params, x, y, args.repeats, device, args.amp, args.channels_last, args.only)
        report[key] = {"rows": rows, "targets": verdicts(rows), "inputs": source}
        print_table(f"{key} {params or ''} ({source})", rows)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
