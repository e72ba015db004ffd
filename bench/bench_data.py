"""infinity-data benchmark: samples/s per core (metadata path, with pHash, OCR det-only), Ray 1 -> 2 workers, and
kill/resume rounds. Writes bench/results/data.json.

    uv run python bench/bench_data.py [--samples 3000] [--kill-rounds 20] [--skip-ray]

"Real JPEGs" are the official toy photos (shared/data/infinity_toy_data), repeated into webdataset shards; each copy
gets a unique key (bytes stay identical, so dedup is disabled where it would drop them). Without the toy data,
synthetic JPEGs are used and the results say so.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from infinity_data.config import config_from_dict
from infinity_data.shards import discover_shards, read_shard
from infinity_data.stages import from_rows, metadata_stage

REPO = Path(__file__).resolve().parents[1]


def _photos() -> tuple[list[bytes], str]:
    toy = REPO.parent / "shared" / "data" / "infinity_toy_data"
    if toy.is_dir():
        return [p.read_bytes() for p in sorted((toy / "images").glob("*.jpg"))], "official toy photos (10 real JPEGs)"
    from infinity_data.testing import clean_image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(10):
        buffer = io.BytesIO()
        clean_image(rng, 640, 480).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out, "synthetic JPEGs (toy data not found)"


def _write_shards(folder: Path, photos: list[bytes], samples: int, per_shard: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(0, samples, per_shard):
        with tarfile.open(folder / f"bench-{shard // per_shard:05d}.tar", "w") as tar:
            for i in range(shard, min(samples, shard + per_shard)):
                for name, data in ((f"{i:08d}.jpg", photos[i % len(photos)]), (f"{i:08d}.txt", f"caption {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def _config(inputs: Path, output: Path, enabled: list[str], **extra) -> object:
    data = {"input": {"paths": [str(inputs)]}, "output": {"path": str(output)}, "executor": "local", "progress": False,
            "filters": {"enabled": enabled, "resolution": {"pn": "0.06M"}, "dedup": {"exact": False, "near": True}}}
    data.update(extra)
    return config_from_dict(data)


def _stage_rate(inputs: Path, enabled: list[str], limit: int | None = None) -> dict:
    """Metadata stage alone in this process (one core): samples/s."""
    config = _config(inputs, Path(tempfile.mkdtemp()), enabled)
    rows = [row for ref in discover_shards(config.input) for row in read_shard(ref)][:limit]
    batch = from_rows(rows)
    start = time.perf_counter()
    out = metadata_stage(batch, config)
    seconds = time.perf_counter() - start
    return {"samples": len(rows), "seconds": seconds, "samples_per_s_per_core": len(rows) / seconds,
            "kept": int(sum(1 for s in out["status"] if s == "ok"))}


def _ocr_rate(photos: list[bytes], count: int, verify: bool = True) -> dict:
    from infinity_data.decode import decode_rgb
    from infinity_data.filters.ocr import OcrConfig, TextAreaScorer

    scorer = TextAreaScorer(OcrConfig(num_threads=1, verify_thick_boxes=0.15 if verify else 0.0))
    images = [decode_rgb(photos[i % len(photos)], max_side=640) for i in range(count)]
    scorer.score(images[0])  # warm-up (session creation)
    start = time.perf_counter()
    areas = [scorer.score(image)[0] for image in images]
    seconds = time.perf_counter() - start
    return {"samples": count, "seconds": seconds, "samples_per_s_per_core": count / seconds,
            "limit_side_len": 640, "thick_box_verification": verify, "mean_text_area": float(np.mean(areas))}


def _end_to_end_local(inputs: Path, enabled: list[str]) -> dict:
    from infinity_data.runner import curate

    output = Path(tempfile.mkdtemp())
    result = curate(_config(inputs, output, enabled))
    t = result.report["totals"]
    return {"samples": t["in"], "wall_seconds": result.wall_seconds, "samples_per_s": t["in"] / result.wall_seconds,
            "kept": t["kept"]}


def _ray_scaling(inputs: Path, enabled: list[str]) -> dict:
    """Run the Ray executor with 1 and 2 CPUs in fresh subprocesses; time only the pipeline (not ray.init)."""
    code = rf"""
import json, sys, time, tempfile, ray
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_data import _config
from infinity_data.runner import curate
cpus = int(sys.argv[1])
ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
cfg = _config(Path({str(inputs)!r}), Path(tempfile.mkdtemp()), {enabled!r}, executor="ray", ray={{"batch_size": 100}})
start = time.perf_counter(); result = curate(cfg); seconds = time.perf_counter() - start
print(json.dumps({{"cpus": cpus, "samples": result.report["totals"]["in"], "seconds": seconds}}))
"""
    out = {}
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    for cpus in (1, 2):
        proc = subprocess.run([sys.executable, "-c", code, str(cpus)], capture_output=True, text=True, env=env, timeout=900)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not line:
            raise RuntimeError(proc.stderr[-2000:])
        r = json.loads(line[-1])
        out[f"{cpus}_workers"] = {**r, "samples_per_s": r["samples"] / r["seconds"]}
    out["speedup_1_to_2"] = out["2_workers"]["samples_per_s"] / out["1_workers"]["samples_per_s"]
    return out


def _kill_resume(rounds: int, workdir: Path) -> dict:
    from infinity_data.shards import read_tar_samples
    from infinity_data.testing import make_synthetic_shards

    inputs = workdir / "kill_in"
    make_synthetic_shards(inputs, num_shards=rounds + 6, clean_per_shard=3, seed=3, size=256, with_text=False)
    config = workdir / "kill.toml"
    config.write_text(
        f'executor = "local"\n[input]\npaths = ["{inputs}"]\n[output]\npath = "unused"\nwrite_splits = true\n'
        '[filters]\nenabled = ["caption", "resolution", "aspect_ratio", "dedup"]\n[filters.resolution]\npn = "0.06M"\n'
    )

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "infinity_data.cli", "curate", "--config", str(config), "--quiet", f"output.path={out}"]

    def committed(out: Path) -> int:
        return len(list((out / "stats").glob("*.stats.json"))) if (out / "stats").is_dir() else 0

    start = time.perf_counter()
    subprocess.run(command(workdir / "ref"), check=True, capture_output=True)
    reference_seconds = time.perf_counter() - start
    rng = random.Random(1)
    total = rounds + 6
    targets = sorted(rng.choices(range(0, total - 1), k=rounds))
    kills = 0
    for target in targets:
        proc = subprocess.Popen(command(workdir / "res"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and committed(workdir / "res") < target:
            time.sleep(0.003)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    subprocess.run(command(workdir / "res"), check=True, capture_output=True)

    def snapshot(out: Path):
        tars = sorted((out / "shards").glob("*.tar"))
        return [p.read_bytes() for p in tars], [k for p in tars for k, _ in read_tar_samples(p)]

    ref_bytes, ref_keys = snapshot(workdir / "ref")
    got_bytes, got_keys = snapshot(workdir / "res")
    start = time.perf_counter()
    subprocess.run(command(workdir / "res"), check=True, capture_output=True)
    noop = time.perf_counter() - start
    return {"rounds": rounds, "kills_landed": kills, "shards": total, "keys_identical": got_keys == ref_keys,
            "duplicates": len(got_keys) - len(set(got_keys)), "missing": len(set(ref_keys) - set(got_keys)),
            "tars_byte_identical": got_bytes == ref_bytes, "reference_run_seconds": reference_seconds,
            "finished_rerun_seconds_incl_python_startup": noop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--kill-rounds", type=int, default=20)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "data.json"))
    args = parser.parse_args()
    photos, source = _photos()
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    inputs = work / "in"
    _write_shards(inputs, photos, args.samples, per_shard=500)
    load_before = os.getloadavg()
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_start": load_before},
        "images": source,
        "metadata_only": _stage_rate(inputs, ["caption", "resolution", "aspect_ratio"]),
        "metadata_plus_phash": _stage_rate(inputs, ["caption", "resolution", "aspect_ratio", "dedup"], limit=1000),
        "ocr_det_only": _ocr_rate(photos, 30, verify=False),
        "ocr_det_plus_thick_box_verification": _ocr_rate(photos, 30, verify=True),
        "end_to_end_local_metadata_only": _end_to_end_local(inputs, ["caption", "resolution", "aspect_ratio"]),
    }
    print(json.dumps(results, indent=1), flush=True)
    if not args.skip_ray:
        results["ray_scaling_metadata_plus_phash"] = _ray_scaling(inputs, ["caption", "resolution", "aspect_ratio", "dedup"])
        print(json.dumps(results["ray_scaling_metadata_plus_phash"], indent=1), flush=True)
    if args.kill_rounds:
        results["kill_resume"] = _kill_resume(args.kill_rounds, work)
        print(json.dumps(results["kill_resume"], indent=1), flush=True)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
