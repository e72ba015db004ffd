"""infinity-service load benchmark on loopback: 64 concurrent requests against the real server process.

    uv run python bench/bench_service.py [--requests 64] [--batch 8] [--repeats 5] [--out bench/results/service.json]

Model: the packaged demo model (``bitwise_ar/demo_model``) when it exists, else a tiny random pipeline built with
``bitwise_ar.testing.build_tiny_pipeline`` (the results say which). Each phase starts the service with its one
command (``infinity-service --config services/generate/configs/local.toml key=value ...``) on a free loopback port,
warms it up, fires all requests at once (single images, distinct seeds, one schedule) with httpx, and records every
status and latency:

* ``overload``: ``max_queue`` smaller than the burst -> every answer must be 200 or a clean 503 with Retry-After;
* ``unbatched`` (``max_batch_size=1``) and ``batched`` (``max_batch_size=--batch``): the queue holds the whole burst,
  so all must be 200; throughput (images/s) and p50/p99 latency, and the batched/unbatched throughput ratio; the
  phases alternate ``--repeats`` times so load changes on a shared machine hit both alike (best repeat reported);
* memory: the server's RSS after warm-up and after each burst (``--repeats`` bursts per server).

Exits non-zero on any failure other than a clean 503. Loopback only; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "services" / "generate" / "configs" / "local.toml"
PROMPTS = ["two red circles to the left of a blue square", "a yellow star above a green triangle",
           "one purple square", "three blue circles"]  # fmt: skip


def _model_dir(scratch: Path) -> tuple[Path, str]:
    import bitwise_ar

    demo = Path(bitwise_ar.__file__).resolve().parent / "demo_model"
    if demo.is_dir():
        return demo, "packaged demo model (bitwise_ar/demo_model)"
    from bitwise_ar.testing import build_tiny_pipeline

    return build_tiny_pipeline(scratch / "tiny-model", seed=0), "tiny random pipeline (demo model not present yet)"


class Server:
    """The service started with its one command in a child process."""

    def __init__(self, model_dir: Path, log: Path, **overrides: Any) -> None:
        from infinity_service.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        script = Path(sys.executable).parent / "infinity-service"
        args = [f"service.model_dir={json.dumps(str(model_dir))}", f"service.port={self.port}", "service.gallery_size=4"]
        args += [f"service.{k}={json.dumps(v)}" for k, v in overrides.items()]
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [str(script), "--config", str(CONFIG), "--log-level", "warning", *args],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("service not ready after 300 s")
            time.sleep(0.3)
        self.ps = psutil.Process(self.process.pid)

    def rss_mib(self) -> float:
        return round(self.ps.memory_info().rss / 2**20, 1)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/healthz", timeout=10).json()["stats"]

    def models(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/models", timeout=10).json()["data"][0]

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.log.close()


async def _burst(url: str, num_requests: int, seed0: int) -> tuple[list[dict[str, Any]], float]:
    """Fire ``num_requests`` single-image requests at once; return per-request results and the wall time."""
    limits = httpx.Limits(max_connections=num_requests, max_keepalive_connections=num_requests)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def one(i: int) -> dict[str, Any]:
            body = {"prompt": PROMPTS[i % len(PROMPTS)], "seed": seed0 + i}
            started = time.perf_counter()
            try:
                response = await client.post("/v1/images", json=body)
            except httpx.HTTPError as err:
                return {"status": None, "error": repr(err), "latency_s": time.perf_counter() - started}
            out: dict[str, Any] = {"status": response.status_code, "latency_s": time.perf_counter() - started}
            if response.status_code == 200:
                out["batch_size"] = response.json()["images"][0]["batch_size"]
            elif response.status_code == 503:
                error = response.json().get("error", {})
                out["clean_503"] = bool(response.headers.get("retry-after")) and "queue full" in error.get(
                    "message", ""
                )
            else:
                out["error"] = response.text[:300]
            return out

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(num_requests)))
        return list(results), time.perf_counter() - started


def _summary(results: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    ok = [r for r in results if r["status"] == 200]
    rejected = [r for r in results if r["status"] == 503 and r.get("clean_503")]
    failures = [r for r in results if r not in ok and r not in rejected]
    latencies = np.array([r["latency_s"] for r in ok]) if ok else np.array([np.nan])
    return {
        "requests": len(results), "ok": len(ok), "clean_503": len(rejected), "failures": len(failures),
        "failure_examples": [r.get("error") for r in failures[:3]],
        "wall_s": round(wall_s, 3), "images_per_s": round(len(ok) / wall_s, 3),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3),
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 3),
        "latency_max_s": round(float(latencies.max()), 3),
        "mean_batch_size": round(float(np.mean([r["batch_size"] for r in ok])), 2) if ok else None,
    }  # fmt: skip


def _warm(url: str) -> None:
    for seed in range(2):  # first calls build attention masks / allocator pools
        response = httpx.post(f"{url}/v1/images", json={"prompt": PROMPTS[0], "seed": seed}, timeout=600)
        response.raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="max_batch_size of the batched phase")
    parser.add_argument("--repeats", type=int, default=5, help="bursts per throughput phase (alternating)")
    parser.add_argument("--overload-queue", type=int, default=16, help="max_queue of the overload phase")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "service.json")
    args = parser.parse_args(argv)

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch_dir:
        scratch = Path(scratch_dir)
        model_dir, model_note = _model_dir(scratch)
        print(f"model: {model_note}", file=sys.stderr)

        # Overload: a burst larger than the queue -> only 200s and clean 503s.
        server = Server(model_dir, scratch / "overload.log", max_queue=args.overload_queue, max_batch_size=args.batch)
        try:
            _warm(server.url)
            overload = _summary(*asyncio.run(_burst(server.url, args.requests, 1000)))
            overload["max_queue"] = args.overload_queue
        finally:
            server.close()
        print(f"overload: {overload}", file=sys.stderr)

        # Throughput with and without batching: alternate bursts on two live servers.
        queue = max(args.requests, 32)
        servers = {
            "unbatched": Server(model_dir, scratch / "unbatched.log", max_queue=queue, max_batch_size=1),
            "batched": Server(model_dir, scratch / "batched.log", max_queue=queue, max_batch_size=args.batch),
        }
        phases: dict[str, dict[str, Any]] = {name: {"bursts": []} for name in servers}
        try:
            defaults = servers["batched"].models()["defaults"]
            for name, srv in servers.items():
                _warm(srv.url)
                phases[name]["rss_mib_after_warmup"] = srv.rss_mib()
                phases[name]["max_batch_size"] = srv.models()["max_batch_size"]
                phases[name]["batches_across_requests"] = srv.models()["batches_across_requests"]
            for repeat in range(args.repeats):
                for name, srv in servers.items():
                    burst = _summary(*asyncio.run(_burst(srv.url, args.requests, 10_000 * (repeat + 1))))
                    burst["rss_mib_after"] = srv.rss_mib()
                    phases[name]["bursts"].append(burst)
                    print(f"{name} #{repeat}: {burst}", file=sys.stderr)
            for name, srv in servers.items():
                phases[name]["server_stats"] = srv.stats()
        finally:
            for srv in servers.values():
                srv.close()

    for phase in phases.values():
        phase["best"] = max(phase["bursts"], key=lambda b: b["images_per_s"])
        rss = [phase["rss_mib_after_warmup"]] + [b["rss_mib_after"] for b in phase["bursts"]]
        # After the first burst (allocator pools sized), the RSS should stay flat over the remaining bursts.
        phase["rss_mib_growth_after_first_burst"] = round(rss[-1] - rss[1], 1) if len(rss) > 2 else None
    ratio = phases["batched"]["best"]["images_per_s"] / phases["unbatched"]["best"]["images_per_s"]
    failures = overload["failures"] + sum(b["failures"] for p in phases.values() for b in p["bursts"])
    not_ok = sum(b["requests"] - b["ok"] for p in phases.values() for b in p["bursts"])

    import torch

    result = {
        "note": "loopback, CPU, one server process per phase started with the README's command; shared machine: "
        "see load_average; throughput phases alternate bursts and report the best of each",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_start": [round(x, 1) for x in load_start],
            "load_average_end": [round(x, 1) for x in os.getloadavg()],
        },
        "model": model_note,
        "request": {
            "resolution": defaults["resolution"],
            "native_size": defaults["native_size"],
            "aspect_ratio": defaults["aspect_ratio"],
            "sampling": {k: defaults[k] for k in ("cfg", "tau", "top_k", "top_p")},
            "images_per_request": 1,
            "concurrent_requests": args.requests,
        },
        "overload": overload,
        "unbatched": phases["unbatched"],
        "batched": phases["batched"],
        "throughput_ratio_batched_over_unbatched": round(ratio, 2),
        "failures_other_than_clean_503": failures,
        "throughput_phases_all_ok": not_ok == 0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("throughput_ratio_batched_over_unbatched",
                                              "failures_other_than_clean_503")}), file=sys.stderr)  # fmt: skip
    return 0 if failures == 0 and not_ok == 0 and overload["ok"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
