"""Every measurement of issue 12 in one call, sized to finish in a few minutes on one GPU.

    python benchmarks/gpu_all.py --out "$OUT"                        # on the GPU machine
    python benchmarks/gpu_all.py --device cpu --tiny --out /tmp/g    # the same code, seconds, on a CPU

1. Step time of every regularizer over ERM (`regularizer_cost.benchmark`): PreAct ResNet-18,
   3×32×32, batch 256, in fp32 and in bf16 autocast; ERM and double backprop also channels_last
   in bf16; LeNet-5 and cnn_small at batch 128 (fp32), as on the CPU.
2. ERM inside `compare`'s training against a bare PyTorch loop (`loop_throughput.measure`):
   ResNet-18, batch 256, 8,192 images × 2 epochs, bf16 and fp32.
3. The `gpu`-marked tests (finite differences under CUDA bf16, no per-step host sync, the trained
   input-Hessian penalty against exact eigenvalues on the GPU).
4. With `--eval`, helper scripts of the evaluation issue when they exist (eval_sweep.py,
   eval_suite.py) at small settings, each under its own time limit.

Writes `gpu_all.json` and `gpu_all.md` (the tables, the device name, every target's verdict)
into --out. Each part is guarded: a failure is recorded and the next part still runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loop_throughput  # noqa: E402
import regularizer_cost  # noqa: E402


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def cost_tables(device: torch.device, tiny: bool, repeats: int) -> dict[str, Any]:
    """Part 1: regularizer step-time ratios, resnet18 fp32 / bf16 / bf16 channels_last, small models fp32."""
    batch = 8 if tiny else 256
    small_batch = 16 if tiny else 128
    runs: list[tuple[str, str, int, bool, bool, list[str] | None]] = [
        ("resnet18 fp32", "resnet18", batch, False, False, None),
        ("resnet18 bf16", "resnet18", batch, True, False, None),
        ("resnet18 bf16 channels_last", "resnet18", batch, True, True, ["double_backprop"]),
        ("lenet5 fp32", "lenet5", small_batch, False, False, None),
        ("cnn_small fp32", "cnn_small", small_batch, False, False, None),
    ]
    out: dict[str, Any] = {}
    for title, key, size, amp, channels_last, only in runs:
        started = time.perf_counter()
        arch, params = regularizer_cost.MODELS[key]
        x, y, source = regularizer_cost.load_inputs(size, regularizer_cost.INPUT_SHAPES.get(key, (1, 28, 28)))
        rows = regularizer_cost.benchmark(arch, params, x, y, repeats, device, amp, channels_last, only)
        out[title] = {"batch": size, "inputs": source, "rows": rows, "targets": regularizer_cost.verdicts(rows),
                      "seconds": time.perf_counter() - started}
        regularizer_cost.print_table(f"{title}, batch {size}", rows)
    return out


def throughput(device: torch.device, tiny: bool) -> dict[str, Any]:
    """Part 2: ERM inside compare's training over a bare loop, ResNet-18 batch 256."""
    samples, batch, epochs = (64, 16, 1) if tiny else (8192, 256, 2)
    out = {}
    for amp in (True, False):
        r = loop_throughput.measure("resnet18", samples, epochs, batch, device, amp, rounds=2)
        out["bf16" if amp else "fp32"] = r
        print(f"compare vs bare, resnet18 {'bf16' if amp else 'fp32'}: {r['compare_images_per_s']:,.0f} / "
              f"{r['bare_images_per_s']:,.0f} images/s = {r['ratio']:.0%} "
              f"({r['ratio_without_state_writes']:.0%} without state writes)")
    return out


def run_command(command: list[str], timeout: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        return {"command": " ".join(command), "rc": done.returncode, "seconds": time.perf_counter() - started,
                "tail": (done.stdout + done.stderr)[-4000:]}
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-4000:] if isinstance(e.stdout, bytes) else (e.stdout or "")[-4000:]
        return {"command": " ".join(command), "rc": "timeout", "seconds": timeout, "tail": str(tail)}


def gpu_tests(timeout: int) -> dict[str, Any]:
    """Part 3: the gpu-marked tests (they skip themselves without CUDA)."""
    return run_command([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                        str(HERE.parent / "tests" / "unit" / "test_gpu_training.py")], timeout)


def eval_scripts(tiny: bool, timeout: int) -> dict[str, Any]:
    """Part 4 (optional): the evaluation issue's benchmarks, when they exist, at small settings."""
    out = {}
    samples = "50" if tiny else "500"
    for name, args in (("eval_sweep.py", ["--samples", samples, "--repeats", "1"]),
                       ("eval_suite.py", ["--samples", "100" if not tiny else "20"])):
        script = HERE / name
        if script.exists():
            out[name] = run_command([sys.executable, str(script), *args], timeout)
            print(f"{name}: rc {out[name]['rc']} in {out[name]['seconds']:.0f}s")
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Issue 12 measurements on {report['device_name']}", "",
             f"torch {report['torch']}, {report['started']}, {report['seconds']:.0f} s in all.", ""]
    cost, throughput_runs = report.get("cost", {}), report.get("throughput", {})
    for part, result in (("cost", cost), ("throughput", throughput_runs)):
        if "error" in result:
            lines += [f"## {part}: failed", "", "```", result["error"], "```", ""]
    for title, table in cost.items():
        if title == "error":
            continue
        lines += [f"## {title}, batch {table['batch']} ({table['inputs']})", "",
                  "| regularizer | step ms | × ERM | saved MB |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {r['median_ms']:.2f} | {r['ratio_to_erm']:.2f} | {r['saved_mb']:.1f} |"
                  for name, r in table["rows"].items()]
        lines += [""] + [f"- {v['name']} ≤ {v['limit']}× {v['reference']}: {v['ratio']:.2f}× — "
                         f"{'met' if v['met'] else 'missed'}" for v in table["targets"]] + [""]
    for precision, r in throughput_runs.items():
        if precision == "error":
            continue
        lines += [f"- ERM in compare vs bare loop, resnet18 {precision}, batch {r['batch']}: "
                  f"{r['compare_images_per_s']:,.0f} / {r['bare_images_per_s']:,.0f} images/s = {r['ratio']:.0%} "
                  f"(target ≥ 70 %: {'met' if r['met'] else 'missed'}); without the per-epoch resume-state "
                  f"writes {r['ratio_without_state_writes']:.0%}"]
    if "tests" in report:
        lines += ["", f"gpu tests: rc {report['tests']['rc']}", "```", report["tests"]["tail"][-1500:], "```"]
    for name, r in report.get("eval", {}).items():
        lines += ["", f"{name}: rc {r['rc']}, {r['seconds']:.0f} s", "```", r["tail"][-2500:], "```"]
    return "\n".join(lines) + "\n"


def guarded(part: str, fn, *args) -> Any:
    try:
        return fn(*args)
    except Exception:  # record and go on: one failed part must not lose the others
        print(f"{part} failed:\n{traceback.format_exc()}", file=sys.stderr)
        return {"error": traceback.format_exc()[-3000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU check of the script)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per cost table (default 15; tiny 1)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["cost", "throughput", "tests", "eval"])
    parser.add_argument("--eval", action="store_true", help="also run eval_sweep.py / eval_suite.py if present")
    parser.add_argument("--part-timeout", type=int, default=240, help="seconds for each subprocess part")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    repeats = args.repeats or (1 if args.tiny else 15)
    started = time.perf_counter()
    report: dict[str, Any] = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "tiny": args.tiny}
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        report["seconds"] = time.perf_counter() - started
        (args.out / "gpu_all.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "gpu_all.md").write_text(markdown(report))

    if "cost" not in args.skip:
        report["cost"] = guarded("cost", cost_tables, device, args.tiny, repeats)
        save()
    if "throughput" not in args.skip:
        report["throughput"] = guarded("throughput", throughput, device, args.tiny)
        save()
    if "tests" not in args.skip:
        report["tests"] = gpu_tests(args.part_timeout)
        print(f"gpu tests: rc {report['tests']['rc']}")
        save()
    if args.eval and "eval" not in args.skip:
        report["eval"] = eval_scripts(args.tiny, args.part_timeout)
    save()
    print(f"wrote {args.out / 'gpu_all.md'} and gpu_all.json in {report['seconds']:.0f}s")


if __name__ == "__main__":
    main()
