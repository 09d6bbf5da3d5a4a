"""Issue 21's timing targets, measured over real HTTP (the API with its bounded protocol, real Redis,
real checker processes): `python benchmarks/upload_limits.py [--redis redis://127.0.0.1:6379/0]`.

- the CPU-bomb ONNX (40 MatMuls of 4096², 3.8 KB) is refused, and how fast (target < 30 s);
- a legitimate small ONNX CNN uploads, and how fast (target: a few seconds);
- tenant A sends 11 CPU-heavy uploads at once (graphs whose cost only a timed forward tells, which
  compute until the checker's CPU limit); how long tenant B's legitimate upload takes meanwhile
  (target < 30 s), and what A's got (429 past its per-tenant share, 422 for the rest);
- a 1 MiB request header gets 431, and /healthz's latency meanwhile (target < 100 ms);
- 3,000 unknown form fields (180 MB) are refused, and the API's memory growth (target < 50 MiB).

Results (one run, 2026-12-06, the 2-core development machine otherwise idle):
- bomb: 422 over_limits (MAX_FORWARD_FLOPS, 5.5·10¹² FLOPs counted from the graph) in 6.4 s;
- legitimate ONNX CNN: 201 in 6.1 s (mostly the checker importing torch and onnx2torch);
- tenant A's 11 heavy uploads: 2 × 422 (check_cpu_seconds), 9 × 429 at once; tenant B's CNN during
  them: 201 in 5.4 s;
- 1 MiB header: 431; /healthz at most 17 ms over 50 polls meanwhile;
- 3,000 unknown form fields (180 MB): 422 at the first; API memory +0.5 MiB.
A run while other test runs loaded the machine (load average ~5) took 16.2 s, 20.3 s and 40.9 s for
the first three (waiting for a core).
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import psutil
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cost_fixtures import OPSET, SECTION_VECTOR, matmul_bomb  # noqa: E402
from tests.integration.api_server import key_of, running_api  # noqa: E402
from tests.user_model_fixtures import SECTIONS, digits, example_input, export_onnx, trained_cnn  # noqa: E402


def heavy_uncountable(path: Path, size: int = 2048, layers: int = 200) -> Path:
    """A NonZero makes the graph's cost unknowable from its structure: the checker times a forward that
    multiplies size² matrices `layers` times and runs into its CPU limit."""
    nodes = [helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([size, size]),
                                                                                       "shape")),
             helper.make_node("ConstantOfShape", ["shape"], ["m0"], value=numpy_helper.from_array(
                 np.array([1e-4], np.float32), "v")),
             helper.make_node("NonZero", ["x"], ["nz"])]
    nodes += [helper.make_node("MatMul", [f"m{i}", f"m{i}"], [f"m{i + 1}"]) for i in range(layers)]
    nodes += [helper.make_node("ReduceSum", [f"m{layers}"], ["s"], keepdims=0),
              helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(
                  np.full((64, 10), 0.01, np.float32), "w")),
              helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])])
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(path))
    return path


def upload(url: str, tenant: str, path: Path, section: dict[str, object]) -> tuple[int, float, str]:
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/models", headers={"Authorization": f"Bearer {key_of(tenant)}"},
                          files={"file": (path.name, path.read_bytes())}, data={"model": json.dumps(section)},
                          timeout=600)
    return response.status_code, time.monotonic() - started, response.text[:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="upload-limits-"))
    cnn = export_onnx(trained_cnn(digits()), example_input("plain"), work / "cnn.onnx")
    with running_api(args.redis, work / "api") as api:
        url = api.url
        status, seconds, text = upload(url, "alice", matmul_bomb(work / "bomb.onnx"), SECTION_VECTOR)
        print(f"bomb: {status} in {seconds:.1f} s: {text}")
        status, seconds, _ = upload(url, "alice", cnn, SECTIONS["plain"])
        print(f"legit CNN: {status} in {seconds:.1f} s")

        heavy = heavy_uncountable(work / "heavy.onnx")
        with ThreadPoolExecutor(12) as pool:
            floods = [pool.submit(upload, url, "bob", heavy, SECTION_VECTOR) for _ in range(11)]
            time.sleep(3)
            status, seconds, _ = pool.submit(upload, url, "carol", cnn, SECTIONS["plain"]).result()
            print(f"tenant B's CNN during A's flood: {status} in {seconds:.1f} s")
            codes = [f.result()[0] for f in floods]
            print(f"tenant A's 11 heavy uploads: {sorted(codes)}")

        host, port = url.removeprefix("http://").split(":")
        answer: list[bytes] = []

        def big_header() -> None:
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                try:
                    for _ in range(16):
                        sock.sendall(b"a" * 65536)
                except OSError:
                    pass
                answer.append(sock.recv(200))

        sender = threading.Thread(target=big_header)
        sender.start()
        latencies = []
        with httpx.Client() as client:
            for _ in range(50):
                started = time.monotonic()
                client.get(f"{url}/healthz")
                latencies.append(time.monotonic() - started)
        sender.join()
        status_line = answer[0].split(b"\r\n")[0].decode() if answer else "no answer"
        print(f"1 MiB header: {status_line}; /healthz max {max(latencies) * 1000:.0f} ms over {len(latencies)} polls")

        server = psutil.Process(api.process.pid)
        before = server.memory_info().rss
        boundary = "b"
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\n".encode()
                        + b"x" * 60_000 + b"\r\n" for i in range(3000)) + f"--{boundary}--\r\n".encode()
        try:
            status = httpx.post(f"{url}/v1/datasets", content=io.BytesIO(body).read(), timeout=120,
                                headers={"Authorization": f"Bearer {key_of('alice')}",
                                         "content-type": f"multipart/form-data; boundary={boundary}"}).status_code
        except httpx.TransportError as exc:
            status = type(exc).__name__
        print(f"3,000 unknown fields: {status}; API memory {(server.memory_info().rss - before) / 2**20:+.1f} MiB")


if __name__ == "__main__":
    main()
