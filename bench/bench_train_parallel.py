"""Data-parallel training on CPU in one run: 1 worker vs 2-worker DDP vs 2-worker FSDP2 (gloo), same global batch.

Reports per arm the median step time, tokens/s (global), each rank's peak RSS and its parameter + optimiser-state
bytes (what FSDP divides by the worker count), and the loss of the last step (the arms train the same numbers).
Shapes: the ``infinity-125m`` architecture on 128x128 ShapesT2I (``--tiny``: the debug preset on 32x32).
CPU numbers show the mechanics (sharding, communication overhead), never GPU speed.

    python bench/bench_train_parallel.py [--steps 3] [--tiny] [--output bench/results/train_parallel_cpu.json]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import resource
import socket
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer
from infinity_run.distributed import global_mean

SHAPES = {
    "125m": ["model.preset=infinity-125m", "model.overrides.drop_path_rate=0.0", "data.image_size=128", "data.batch_size=2"],
    "tiny": ["model.preset=debug", "data.image_size=32", "data.batch_size=4"],
}
ARMS = {"1 worker": (1, "none"), "2-worker DDP": (2, "ddp"), "2-worker FSDP": (2, "fsdp")}


def _rank_main(rank: int, world: int, strategy: str, overrides: list[str], steps: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    try:
        if world > 1:
            torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
        with tempfile.TemporaryDirectory() as tmp:
            config = load_config(None, [f"run.out_dir={tmp}", "data.source=synthetic", "run.checkpoint_every=0", f"train.steps={steps + 1}", *overrides])
            trainer = ARTrainer(config, device="cpu", strategy=strategy)
            iterator = iter(trainer.source)
            times, metrics = [], {}
            for _ in range(steps + 1):
                batch = next(iterator)
                t0 = time.perf_counter()
                metrics = trainer.train_step([batch])
                times.append(time.perf_counter() - t0)

            def nbytes(t: torch.Tensor) -> int:
                t = t.to_local() if hasattr(t, "to_local") else t
                return t.numel() * t.element_size()

            params = sum(nbytes(p) for p in trainer.model.parameters())
            optim = sum(nbytes(v) for s in trainer.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim)
            loss = global_mean({"loss": metrics["train/loss"]})["loss"]  # the global batch's loss, as logged
            result = {"step_s": statistics.median(times[1:]), "loss": loss, "tokens": metrics["train/tokens"],
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "param_bytes": params, "optimizer_bytes": optim}  # fmt: skip
        buffer = io.BytesIO()
        torch.save(result, buffer)
        queue.put((rank, buffer.getvalue(), None))
    except BaseException:
        queue.put((rank, None, traceback.format_exc()))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run_arm(world: int, strategy: str, overrides: list[str], steps: int) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    procs = [context.Process(target=_rank_main, args=(r, world, strategy, overrides, steps, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, dict] = {}
    for _ in range(world):
        rank, value, error = queue.get(timeout=3600)
        if error:
            raise RuntimeError(f"rank {rank} failed:\n{error}")
        results[rank] = torch.load(io.BytesIO(value), weights_only=True)
    for p in procs:
        p.join()
    return [results[r] for r in range(world)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="debug preset at 32x32 (a quick check of the script)")
    parser.add_argument("--output", default="bench/results/train_parallel_cpu.json")
    args = parser.parse_args()
    overrides = SHAPES["tiny" if args.tiny else "125m"]
    load = os.getloadavg()[0]
    rows = {}
    for name, (world, strategy) in ARMS.items():
        ranks = run_arm(world, strategy, overrides, args.steps)
        step_s = max(r["step_s"] for r in ranks)
        rows[name] = {
            "median_step_s": step_s, "tokens_per_s": ranks[0]["tokens"] / step_s, "last_loss": ranks[0]["loss"],
            "peak_rss_mib_per_rank": [round(r["peak_rss_mib"], 1) for r in ranks],
            "param_bytes_per_rank": [r["param_bytes"] for r in ranks],
            "optimizer_bytes_per_rank": [r["optimizer_bytes"] for r in ranks],
        }  # fmt: skip
        print(f"{name:14s} step {step_s:7.3f} s  {rows[name]['tokens_per_s']:8.1f} tok/s  loss {ranks[0]['loss']:.6f}  "
              f"RSS {rows[name]['peak_rss_mib_per_rank']} MiB  params {[b // 2**20 for b in rows[name]['param_bytes_per_rank']]} MiB  "
              f"AdamW {[b // 2**20 for b in rows[name]['optimizer_bytes_per_rank']]} MiB")  # fmt: skip
    base = rows["1 worker"]
    ratios = {
        name: {"step_time_vs_1_worker": r["median_step_s"] / base["median_step_s"],
               "param_bytes_vs_1_worker": r["param_bytes_per_rank"][0] / base["param_bytes_per_rank"][0],
               "optimizer_bytes_vs_1_worker": r["optimizer_bytes_per_rank"][0] / base["optimizer_bytes_per_rank"][0],
               "loss_rel_diff_vs_1_worker": abs(r["last_loss"] - base["last_loss"]) / abs(base["last_loss"])}
        for name, r in rows.items()
    }  # fmt: skip
    for name, r in ratios.items():
        print(f"{name:14s} " + "  ".join(f"{k} {v:.3g}" for k, v in r.items()))
    out = {"shape": "tiny" if args.tiny else "125m", "overrides": overrides, "steps": args.steps, "arms": rows,
           "ratios": ratios, "load_average_at_start": load, "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__}  # fmt: skip
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
