"""CPU benchmark of infinity-eval's FID pieces: exact statistics vs numpy, eigh Fréchet vs scipy sqrtm, extractor rate.

    uv run python bench/bench_eval.py [--n 5000] [--dim 2048] [--sqrtm-dim 512] [--images 16]
                                      [--output bench/results/eval_cpu.json]

1. ``FeatureStats`` (int64-exact, mergeable) against ``np.cov`` in float64 on ReLU features: time ratio and the
   largest covariance difference (bounded by the 2**-14 feature grid).
2. ``frechet_distance`` (symmetric eigh form) against ``scipy.linalg.sqrtm`` on a rank-deficient and a full-rank pair:
   time ratio and |ΔFID|.
3. FID Inception pool3 extraction, images/s at 299x299 (random weights, same FLOPs as the real network).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from infinity_eval.fid import FeatureStats, extract_features, frechet_distance, load_fid_inception
from infinity_eval.testing import write_random_fid_inception


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def scipy_fid(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--sqrtm-dim", type=int, default=512)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--output", type=Path, default=Path("bench/results/eval_cpu.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    report: dict = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}

    feats = np.maximum(rng.normal(0.3, 1.0, size=(args.n, args.dim)), 0).astype(np.float32)
    stats, t_exact = timed(FeatureStats.from_features, feats)
    cov_np, t_np = timed(np.cov, feats.astype(np.float64), rowvar=False)
    report["stats"] = {"n": args.n, "dim": args.dim, "exact_s": t_exact, "numpy_cov_s": t_np,
                       "ratio_exact_over_numpy": t_exact / t_np, "max_abs_cov_diff": float(np.abs(stats.cov - cov_np).max())}

    d = args.sqrtm_dim
    for label, n in (("rank_deficient", d // 2), ("full_rank", 4 * d)):
        x = np.maximum(rng.normal(0.3, 1.0, size=(n, d)), 0)
        y = np.maximum(rng.normal(0.35, 1.1, size=(n, d)), 0)
        mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
        ours, t_ours = timed(frechet_distance, mu1, s1, mu2, s2)
        ref, t_ref = timed(scipy_fid, mu1, s1, mu2, s2)
        report[f"frechet_{label}"] = {"n": n, "dim": d, "eigh_s": t_ours, "sqrtm_s": t_ref, "speedup": t_ref / t_ours,
                                      "fid": ours, "abs_diff_vs_sqrtm": abs(ours - ref), "rel_diff": abs(ours - ref) / ref}

    weights = write_random_fid_inception(Path("/tmp/bench_eval_inception.pth"))
    model = load_fid_inception(weights)
    images = [rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8) for _ in range(args.images)]
    extract_features(model, images[:2], progress=False)  # warm-up
    _, t_feat = timed(extract_features, model, images, batch_size=8, progress=False)
    report["inception"] = {"images": args.images, "seconds": t_feat, "images_per_s": args.images / t_feat}

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
