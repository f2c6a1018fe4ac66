"""Benchmarks: `mnistlab bench [SUITE...]` runs suites in one process, prints a table, writes JSON.

Each suite compares mnistlab's path against a reference measured in the same process and reports
the ratio; absolute times are for the machine named in the JSON (they only transfer on a GPU).
Warm-up runs are discarded; each figure is the median of repeated runs, with min and max.

    mnistlab bench data          # load time of the bundled MNIST: cold, warm, and the Keras-style reference
    mnistlab bench speed         # time to 99% test accuracy: the `fast` recipe over 5 seeds vs the references
    mnistlab bench zoo           # training throughput and memory of every model in the zoo
    mnistlab bench infer         # inference throughput, batch 1 and 1024, PyTorch and ONNX Runtime
    mnistlab bench serve         # /api/predict latency and throughput with 50 concurrent clients
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import __version__, atomic

SUITES: dict[str, Callable[..., list[dict]]] = {}


def suite(func):
    """Register a benchmark suite under its function name (less the `bench_` prefix)."""
    SUITES[func.__name__.removeprefix("bench_")] = func
    return func


def machine_info() -> dict:
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mnistlab": __version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def timeit(fn: Callable[[], object], *, repeat: int, warmup: int = 1) -> dict:
    """Median/min/max wall seconds of `fn` over `repeat` runs after `warmup` discarded ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": repeat}


@suite
def bench_data(quick: bool = False) -> list[dict]:
    """Loading the bundled MNIST into tensors: cold (gunzip + verify), warm (verified decoded cache),
    against the reference every tutorial writes (gzip.open + np.frombuffer, no verification)."""
    from .. import data
    from ..data import paths

    repeat = 3 if quick else 7
    spec_dir = paths.BUNDLED_DIR / "mnist"

    def reference():  # keras.datasets.mnist.load_data(), in essence
        out = []
        for stem, offset in (("train-images-idx3-ubyte", 16), ("train-labels-idx1-ubyte", 8),
                             ("t10k-images-idx3-ubyte", 16), ("t10k-labels-idx1-ubyte", 8)):
            with gzip.open(spec_dir / f"{stem}.gz", "rb") as f:
                out.append(np.frombuffer(f.read(), np.uint8, offset=offset))
        return out

    rows = []
    ref = timeit(reference, repeat=repeat)
    rows.append({"name": "reference: gzip + np.frombuffer (no checks)", **ref})
    saved = os.environ.get("MNISTLAB_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MNISTLAB_CACHE_DIR"] = tmp
        try:
            def cold():  # an empty decoded cache every time: gunzip + SHA-256 + decode
                for p in Path(tmp).glob("decoded/*"):
                    p.unlink()
                return data.load("mnist", download=False)

            rows.append({"name": "mnistlab.load cold (gunzip, verify)", **timeit(cold, repeat=repeat)})
            rows.append({"name": "mnistlab.load warm (verified cache)",
                         **timeit(lambda: data.load("mnist", download=False), repeat=repeat)})
        finally:
            if saved is None:
                os.environ.pop("MNISTLAB_CACHE_DIR", None)
            else:
                os.environ["MNISTLAB_CACHE_DIR"] = saved
    for row in rows:
        row["ratio_to_reference"] = row["median_s"] / ref["median_s"]
    return rows


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def fast_recipe() -> str:
    """The time-to-accuracy recipe for this machine: `fast-gpu` with a GPU, `fast` on CPUs."""
    return "fast-gpu" if torch.cuda.is_available() else "fast"


def _train_timed(recipe: str, seed: int, **overrides) -> dict:
    """Wall time of a whole `mnistlab train` (data load, model creation, training, the test pass)."""
    from ..training.config import resolve
    from ..training.train import train

    with tempfile.TemporaryDirectory() as out:
        cfg = resolve(recipe, {"seed": seed, "out": out, "progress": False, "device": _device(), **overrides})
        _sync()
        t0 = time.perf_counter()
        summary = train(cfg, quiet=True)
        _sync()
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "train_s": summary["train_s"], "test_acc": summary["test_acc"],
            "epochs": summary["epochs_run"]}


def epoch_flops(model_name: str, n_images: int = 60000, **model_args) -> float:
    """FLOPs of one training epoch (forward + backward) of a model on 1x28x28 images, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import create_model

    model = create_model(model_name, (1, 28, 28), 10, **model_args)
    x = torch.randn(64, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 64 * n_images


@suite
def bench_speed(quick: bool = False) -> list[dict]:
    """Time to 99% test accuracy: the fast recipe over seeds (wall time including data load and model
    creation, measured after one discarded warm-up run), against reference recipes run in the same
    process through the same engine. The recipes are fixed in advance; the test set is evaluated once
    per run, at its end, and decides nothing."""
    import statistics as st

    recipe = fast_recipe()
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    _train_timed(recipe, seed=1000)  # warm-up: caches, kernels, compilation; not counted
    runs = [_train_timed(recipe, seed=s) for s in seeds]
    accs = [r["test_acc"] for r in runs]
    walls = [r["wall_s"] for r in runs]
    rows = [{"name": f"{recipe} (seeds {seeds[0]}-{seeds[-1]})", "test_acc_mean": st.fmean(accs),
             "test_acc_min": min(accs), "test_acc_max": max(accs), "wall_s_mean": st.fmean(walls),
             "wall_s_min": min(walls), "wall_s_max": max(walls), "epochs": runs[0]["epochs"],
             "reached_99": all(a >= 0.99 for a in accs), "seeds": seeds,
             "per_seed": [{"seed": s, **r} for s, r in zip(seeds, runs)]}]
    refs = [("pytorch-example", {"epochs": 1}, "first epoch of the pytorch/examples recipe"),
            ("seed-cnn", {"epochs": 1} if quick else {}, "the Keras tutorial CNN recipe")]
    for ref, overrides, about in refs:
        r = _train_timed(ref, seed=0, **overrides)
        rows.append({"name": f"{ref} ({about}, {r['epochs']} epoch(s), seed 0)", "test_acc_mean": r["test_acc"],
                     "wall_s_mean": r["wall_s"], "epochs": r["epochs"], "reached_99": r["test_acc"] >= 0.99})
    base = rows[0]["wall_s_mean"]
    for row in rows:
        row["time_ratio_to_fast"] = row["wall_s_mean"] / base
    from ..training.config import resolve

    cfg = resolve(recipe)
    flops = epoch_flops(cfg.model, **cfg.model_args) * cfg.epochs * (1 if cfg.validation == 0 else 55 / 60)
    rows[0]["train_gflop"] = flops / 1e9
    rows[0]["achieved_gflop_s"] = flops / 1e9 / st.fmean(r["train_s"] for r in runs)
    return rows


@suite
def bench_zoo(quick: bool = False) -> list[dict]:
    """Training throughput (images/s, batch 128, forward+backward+Adam step) and memory of every model."""
    from ..models import count_parameters, create_model, list_models

    device = torch.device(_device())
    steps = 3 if quick else 10
    rows = []
    for name in list_models():
        model = create_model(name, (1, 28, 28), 10).to(device)
        opt = torch.optim.Adam(model.parameters())
        x = torch.randn(128, 1, 28, 28, device=device)
        y = torch.randint(0, 10, (128,), device=device)

        def step():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step()
        _sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync()
        dt = (time.perf_counter() - t0) / steps
        rows.append({"name": name, "params": count_parameters(model), "images_per_s": 128 / dt,
                     "ms_per_step": dt * 1000, "epoch_gflop": epoch_flops(name) / 1e9,
                     "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None})
    return rows


@suite
def bench_infer(quick: bool = False) -> list[dict]:
    """Predictions per second of the default model on real MNIST test images, batch 1 and batch 1024,
    in PyTorch (the reference) and ONNX Runtime, on this machine's CPU cores."""
    from .. import data
    from ..models.predictor import load_predictor
    from ..serving.predict import DEFAULT_MODEL

    images = data.load("mnist").test.images
    predictor = load_predictor(DEFAULT_MODEL)
    reps = {1: 200 if quick else 2000, 1024: 5 if quick else 30}
    rows = []
    with torch.inference_mode():
        for batch, n in reps.items():
            x = images[:batch]
            t = timeit(lambda: predictor.probs(x), repeat=n, warmup=5)
            rows.append({"name": f"pytorch batch {batch}", "predictions_per_s": batch / t["median_s"],
                         "latency_ms_median": t["median_s"] * 1000, "runs": n})
    try:
        import onnxruntime as ort

        from ..serving.export import export
    except ImportError:
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        path = export(DEFAULT_MODEL, out=Path(tmp) / "default.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch, n in reps.items():
            x = (images[:batch].float() / 255).unsqueeze(1).numpy()
            t = timeit(lambda: session.run(None, {"images": x}), repeat=n, warmup=5)
            rows.append({"name": f"onnxruntime batch {batch}", "predictions_per_s": batch / t["median_s"],
                         "latency_ms_median": t["median_s"] * 1000, "runs": n})
    for row in rows:
        ref = next(r for r in rows if r["name"] == f"pytorch batch {row['name'].split()[-1]}")
        row["ratio_to_pytorch"] = row["predictions_per_s"] / ref["predictions_per_s"]
    return rows


@suite
def bench_serve(quick: bool = False) -> list[dict]:
    """/api/predict over loopback: a real `mnistlab serve` process, 50 concurrent clients each sending
    a 280x280 PNG drawing back to back; latency p50/p99, throughput, errors. /api/health beside it is
    the reference: the cost of the HTTP stack alone."""
    import io
    import socket
    import subprocess

    import httpx
    from PIL import Image, ImageDraw

    img = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(img).line([(70, 60), (210, 60), (120, 240)], fill=255, width=18)  # a drawn 7
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    body = buf.getvalue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
        total = 500 if quick else 3000
        rows = []
        for name, method, path, content, clients in (
                ("GET /api/health (HTTP stack alone)", "GET", "/api/health", None, 50),
                ("POST /api/predict (PNG drawing)", "POST", "/api/predict", body, 50),
                ("POST /api/predict, one client (what a person drawing sees)", "POST", "/api/predict", body, 1)):
            if shutil.which("wrk"):  # a load generator in C: the client costs the 2 cores little
                rows.append(_wrk(url, method, path, content, clients=clients, seconds=5 if quick else 15, name=name))
            else:
                rows.append(asyncio.run(_load(url, method, path, content, clients=clients, total=total, name=name)))
        return rows
    finally:
        server.terminate()
        server.wait(10)


def _wrk(url: str, method: str, path: str, content, *, clients: int, seconds: int, name: str) -> dict:
    """Closed-loop load from wrk (Debian's package): `clients` connections, each sending back to back."""
    import re
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "request.lua"
        lines = [f'wrk.method = "{method}"']
        if content:
            (Path(tmp) / "body").write_bytes(content)
            lines += [f'local f = io.open("{Path(tmp) / "body"}", "rb")', "wrk.body = f:read('*all')", "f:close()",
                      'wrk.headers["Content-Type"] = "image/png"']
        script.write_text("\n".join(lines) + "\n")
        out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(script),
                              url + path], capture_output=True, text=True, timeout=seconds + 60).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"name": name, "clients": clients, "requests": requests, "errors": errors,
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": ms("50%"), "p99_ms": ms("99%"), "client": "wrk"}


async def _load(url: str, method: str, path: str, content, *, clients: int, total: int, name: str) -> dict:
    import httpx
    import numpy as np

    latencies, errors, statuses = [], 0, {}
    remaining = total
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Content-Type": "image/png"} if content else {}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for _ in range(20):  # warm-up
            await client.request(method, path, content=content, headers=headers)

        async def worker():
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    r = await client.request(method, path, content=content, headers=headers)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"name": name, "clients": clients, "requests": len(lat), "errors": errors,
            "requests_per_s": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}


def bench(suites: list[str] | None = None, *, out_dir: str | os.PathLike = "bench-results", quick: bool = False) -> dict:
    """Run the named suites (all by default), print a table per suite and write `<out_dir>/<suite>.json`."""
    from ..errors import MnistlabError

    names = suites or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise MnistlabError(f"unknown benchmark suite(s) {', '.join(unknown)}: expected {', '.join(SUITES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(f"machine: {machine['cpu']} ({machine['cpu_count']} cores, {machine['torch_threads']} torch threads), "
          f"torch {machine['torch']}, cuda: {machine['cuda']}")
    results = {}
    for name in names:
        rows = SUITES[name](quick=quick)
        results[name] = rows
        print(f"\n== {name} ==")
        print_rows(rows)
        payload = {"suite": name, "machine": machine, "quick": quick, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "rows": rows}
        path = out / f"{name}.json"
        atomic.write_text(path, json.dumps(payload, indent=2))
        print(f"wrote {path}")
    return results


def print_rows(rows: list[dict]) -> None:
    """A table of the scalar columns (lists and details stay in the JSON)."""
    keys = []
    for r in rows:
        keys += [k for k, v in r.items() if k != "name" and k not in keys and not isinstance(v, (list, dict))]
    header = ["name", *keys]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    table = [[fmt(r.get(k, "")) for k in header] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *table)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)))
