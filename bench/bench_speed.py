"""Before/after CPU benchmark of the issue-21 speed work, in one process: sampling eager vs compiled, tokenizer
encode/decode before vs after, and (``--official PATH``) the official FoundationVision/Infinity code on the same
random weights, with its outputs checked against ours.

Sampling: greedy CFG (cfg 3, tau 0.5, top_k 1, so bits are comparable), 256x256 (7 scales, 521 tokens), 64 random
text tokens per prompt, batch 1 and 4, configs "d8w512" (depth 8, width 512, 4 heads) and "125m" (the official 125M
shape). Modes: ``eager`` (SamplingConfig(compile="off")), ``compiled`` (compile="on"; the one-off compile is timed
separately) and ``official``.

Tokenizer: the d32 architecture (random weights), batch 1, 256x256 and 512x512, encoder and decoder. ``before`` is
the path with autograd enabled but no parameter requiring grad (nothing is recorded): allocating SiLU / residual and
the plain nearest-upsample + 3x3 conv and direct 3x3 convs, i.e. the inference path before the speed work; ``after``
the default inference path (in-place SiLU / residual, the subpixel upsample and Winograd F(2x2, 3x3) convs on CPU),
and ``official`` the official AutoEncoder. Outputs are judged the way a user sees them: the encoder's feature
signs (the bits) and the decoder's 8-bit pixels, counted where they differ from the official code's.

The machine is shared: repetitions are interleaved across modes, medians are reported, and the 1-minute load average
is recorded around every item. Each call is timed twice: wall clock and this process's CPU time
(``time.process_time``); with ``--threads 1`` the CPU time is the cost of the work itself, while the wall time also
counts waiting for a core, which dominates at the load averages of 10-25 seen on the 2-core dev machine. The
``cpu_ratio_*`` keys are the ones to quote there.

    uv pip install --target /tmp/official_deps einops pytz   # only for --official
    uv run python bench/bench_speed.py [--official /tmp/official_infinity --official-deps /tmp/official_deps] \
        [--reps 5] [--threads 1] [--no-compiled] [--skip-tokenizer] [--output bench/results/speed_cpu.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bitwise_ar.config import PRESETS
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.sampling import SamplingConfig, sample
from bitwise_ar.testing import random_text, tiny_transformer
from bsq_tokenizer import PRESETS as TOKENIZER_PRESETS
from bsq_tokenizer import BSQTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official_harness  # bench-local helper next to this script

SCHEDULE_256 = [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16)]
CONFIGS = {
    "d8w512": (PRESETS["debug"].replace(depth=8, embed_dim=512, num_heads=4, codebook_dim=32, text_channels=2048,
                                        text_maxlen=512), 4),
    "125m": (PRESETS["infinity-125m"].replace(drop_path_rate=0.0), 4),
}  # (config, official block_chunks)
TEXT_TOKENS = 64
CFG, TAU = 3.0, 0.5


def load() -> float:
    return os.getloadavg()[0]


def interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, dict]:
    """Run every fn ``reps`` times, round-robin; median / min / all wall and process-CPU times and the load around
    the runs. With one thread the CPU time is what the work cost this process, whatever else the machine runs;
    the wall time also counts the time spent waiting for a core (load averages of 10-25 on this 2-core box)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    loads = [load()]
    for _ in range(reps):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        loads.append(load())
    return {
        name: {"median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts,
               "cpu_median_s": statistics.median(cpu[name]), "cpu_min_s": min(cpu[name]), "cpu_times_s": cpu[name],
               "load_1min": loads}
        for name, ts in times.items()
    }


def ratios(times: dict[str, dict], pairs: list[tuple[str, str]]) -> dict[str, float]:
    """``ratio_a_over_b`` (median wall) and ``cpu_ratio_a_over_b`` (median process CPU time) for each pair."""
    out = {}
    for a, b in pairs:
        if a in times and b in times:
            out[f"ratio_{a}_over_{b}"] = times[a]["median_s"] / times[b]["median_s"]
            out[f"cpu_ratio_{a}_over_{b}"] = times[a]["cpu_median_s"] / times[b]["cpu_median_s"]
    return out


def bench_sampling(name: str, batch: int, reps: int, official, modes: tuple[str, ...] = ("eager", "compiled")) -> dict:
    config, chunks = CONFIGS[name]
    model = tiny_transformer(config, seed=0)
    layout = ScaleLayout.build(SCHEDULE_256)
    text = random_text([TEXT_TOKENS] * batch, config.text_channels, seed=1)

    def ours(mode: str):
        settings = SamplingConfig(cfg=CFG, tau=TAU, top_k=1, top_p=0.0, compile=mode)
        with torch.inference_mode():
            return sample(model, text, layout, settings).bits

    fns: dict[str, Callable[[], object]] = {"eager": lambda: ours("off")}
    out: dict = {"config": name, "batch": batch, "parameters": model.num_parameters()}
    eager_bits = ours("off")
    if "compiled" in modes:
        fns["compiled"] = lambda: ours("on")
        t0 = time.perf_counter()
        compiled_bits = ours("on")
        out["compiled_first_call_s"] = time.perf_counter() - t0  # compile of the 7 scale graphs + one image
        out["compiled_bits_differing_from_eager"] = sum(
            int((a != b).sum()) for a, b in zip(eager_bits, compiled_bits, strict=True)
        )
    if official is not None:
        vae = official_harness.official_vae(official, None)
        theirs = official_harness.official_transformer(official, model, vae, chunks)

        def run_official():
            with torch.inference_mode():
                return official_harness.official_generate(theirs, vae, text.features_NC, list(text.lengths),
                                                          SCHEDULE_256, CFG, TAU)

        fns["official"] = run_official
        official_bits = run_official()
        out["official_scales_with_identical_bits"] = sum(
            int(torch.equal(a, b)) for a, b in zip(official_bits, eager_bits, strict=True)
        )
        out["num_scales"] = len(SCHEDULE_256)
    out["times"] = interleaved(fns, reps)
    out.update(ratios(out["times"], [("eager", "compiled"), ("official", "eager"), ("official", "compiled")]))
    return out


@contextlib.contextmanager
def allocation_path():
    """Autograd on (so the blocks take their allocating, pre-change path) with nothing to record."""
    with torch.enable_grad():
        yield


def bench_tokenizer(size: int, reps: int, official) -> dict:
    torch.manual_seed(0)
    tok = BSQTokenizer(TOKENIZER_PRESETS["d32"]).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    codes = torch.randn(1, 32, size // 16, size // 16, generator=gen).sign() / 32**0.5
    out: dict = {"size": size}
    theirs = None
    if official is not None:
        theirs = official_harness.official_vae(official, tok.state_dict()).requires_grad_(False)
    for direction in ("encode", "decode"):
        if direction == "encode":
            def after():
                with torch.inference_mode():
                    return tok.encode_features(images)

            def before():
                with allocation_path():
                    return tok.encode_features(images)

            def run_official():
                with torch.inference_mode():
                    return theirs.encoder(images)
        else:
            def after():
                with torch.inference_mode():
                    return tok.decode_features(codes)

            def before():
                with allocation_path():
                    return tok.decode_features(codes)

            def run_official():
                with torch.inference_mode():
                    return theirs.decode(codes)

        fns: dict[str, Callable[[], object]] = {"before": before, "after": after}
        result: dict = {}
        ref = after()
        result["before_max_abs_diff"] = (before() - ref).abs().max().item()
        if theirs is not None:
            fns["official"] = run_official
            official_out = run_official()
            result["official_max_abs_diff"] = (official_out - ref).abs().max().item()
            if direction == "encode":  # what a user sees of the features: the signs the quantiser turns into bits
                result["official_feature_signs_differing"] = int((official_out.sign() != ref.sign()).sum())
            else:  # ... and of the image: 8-bit pixels
                result["official_uint8_pixels_differing"] = int((to_uint8(official_out) != to_uint8(ref)).sum())
            result["num_values"] = ref.numel()
        result["times"] = interleaved(fns, reps)
        result.update(ratios(result["times"], [("before", "after"), ("official", "after")]))
        out[direction] = result
    return out


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as the 8-bit pixels a user saves (round half to even, like the pipeline's conversion)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this script shares with ``sampling_roofline.py``: the official checkout, repetitions, threads and
    the sampling items."""
    parser.add_argument("--official", type=Path, default=None, help="a FoundationVision/Infinity checkout")
    parser.add_argument("--official-deps", type=Path, default=None, help="a --target dir with einops and pytz")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sampling_arguments(parser)
    parser.add_argument("--tokenizer-reps", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--no-compiled", action="store_true",
                        help="sampling: eager (and official) only, skipping the CPU compile (minutes per item)")
    parser.add_argument("--skip-sampling", action="store_true")
    parser.add_argument("--skip-tokenizer", action="store_true")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "speed_cpu.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    official = official_harness.import_official(args.official, args.official_deps) if args.official else None
    result: dict = {
        "note": "medians over interleaved repetitions on a shared CPU; ratios > 1 mean the second-named is faster",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_1min_at_start": load()},
        "settings": {"cfg": CFG, "tau": TAU, "top_k": 1, "text_tokens": TEXT_TOKENS, "schedule": SCHEDULE_256,
                     "reps": args.reps, "tokenizer_reps": args.tokenizer_reps, "dtype": "fp32",
                     "official": str(args.official) if args.official else None},
        "sampling": [],
        "tokenizer": [],
    }

    def save() -> None:
        result["machine"]["load_1min_at_end"] = load()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")

    if not args.skip_sampling:
        for name in args.configs:
            for batch in args.batches:
                modes = ("eager",) if args.no_compiled else ("eager", "compiled")
                item = bench_sampling(name, batch, args.reps, official, modes)
                result["sampling"].append(item)
                save()
                times = item["times"]
                line = " ".join(f"{m} {t['median_s'] * 1e3:.0f} ms (cpu {t['cpu_median_s'] * 1e3:.0f})"
                                for m, t in times.items())
                print(f"sampling {name} b{batch}: {line}"
                      + "".join(f"; {key} {item[key]:.2f}" for key in item if "ratio_" in key)
                      + f"; load {times['eager']['load_1min'][-1]:.1f}", flush=True)
    if not args.skip_tokenizer:
        for size in args.sizes:
            item = bench_tokenizer(size, args.tokenizer_reps, official)
            result["tokenizer"].append(item)
            save()
            for direction in ("encode", "decode"):
                r = item[direction]
                line = " ".join(f"{m} {t['median_s']:.2f} s (cpu {t['cpu_median_s']:.2f})"
                                for m, t in r["times"].items())
                print(f"tokenizer {direction} {size}: {line}; "
                      + ", ".join(f"{key} {val:.2f}" for key, val in r.items() if "ratio_" in key), flush=True)
    save()
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
