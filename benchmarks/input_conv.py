"""The first convolution's input gradient on one channel: nn.Conv2d against InputConv2d (CPU).

    python benchmarks/input_conv.py                 # batch 128, 1 thread
    python benchmarks/input_conv.py --threads 2 --repeats 50

For the first layers of LeNet-5 (1→6, 5×5, padding 2) and cnn_small (1→32, 4×4, stride 2,
padding 1) on 28×28 inputs: the forward pass, forward + backward to the input (what every
input-gradient penalty and every gradient attack pays at this layer) and forward + backward to
the weights (what ERM pays there), with PyTorch's
`nn.Conv2d` (oneDNN's backward-data kernel) and with `InputConv2d` (models/architectures/
input_conv.py). Medians of interleaved rounds, milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from models.architectures.input_conv import InputConv2d

LAYERS = {
    "lenet5 conv1 (1→6, 5×5, pad 2)": {"out_channels": 6, "kernel_size": 5, "padding": 2},
    "cnn_small conv1 (1→32, 4×4, stride 2, pad 1)": {"out_channels": 32, "kernel_size": 4, "stride": 2, "padding": 1},
}


def input_gradient_step(conv: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        leaf = x.detach().requires_grad_(True)
        out = conv(leaf)
        torch.autograd.grad(out, leaf, torch.ones_like(out))

    return step


def weight_gradient_step(conv: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """What ERM pays at this layer: forward, then the weight and bias gradients (no input gradient)."""

    def step() -> None:
        out = conv(x)
        torch.autograd.grad(out, list(conv.parameters()), torch.ones_like(out))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(args.batch, 1, 28, 28)
    print(f"batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}")
    print("| layer | forward ms | forward + input gradient, nn.Conv2d | InputConv2d | speed-up "
          "| forward + weight gradient (ERM), nn.Conv2d | InputConv2d |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, kwargs in LAYERS.items():
        torch.manual_seed(0)
        stock = nn.Conv2d(1, **kwargs)  # type: ignore[arg-type]
        fast = InputConv2d(1, **kwargs)  # type: ignore[arg-type]
        fast.load_state_dict(stock.state_dict())

        def forward(stock: nn.Module = stock) -> None:
            with torch.no_grad():
                stock(x)

        steps = {"forward": forward, "stock": input_gradient_step(stock, x), "fast": input_gradient_step(fast, x),
                 "stock_w": weight_gradient_step(stock, x), "fast_w": weight_gradient_step(fast, x)}
        times: dict[str, list[float]] = {key: [] for key in steps}
        for step in steps.values():
            step()
        for _ in range(args.repeats):
            for key, step in steps.items():
                started = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - started)
        ms = {key: 1000 * statistics.median(values) for key, values in times.items()}
        print(f"| {name} | {ms['forward']:.2f} | {ms['stock']:.2f} | {ms['fast']:.2f} "
              f"| {ms['stock'] / ms['fast']:.1f}× | {ms['stock_w']:.2f} | {ms['fast_w']:.2f} |")


if __name__ == "__main__":
    main()
