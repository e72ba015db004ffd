"""Image editing on the demo model: in-paint one object of a ShapesT2I scene into another colour / shape.

Each edit renders a two-object scene (ShapesT2I "two_object" or "position" prompt, the demo's render options), masks
one object's box (plus a margin), and asks for the scene with that object replaced by a different colour and/or
shape ("two red circles ..." -> the edited caption). Arms, all with the same seed per edit:

* ``edit@t``: ``InfinityPipeline.edit(mode="inpaint", mask_threshold=t)`` for each threshold t;
* ``generate``: the naive baseline, a new image from the edited caption.

Metrics per edit: **region** -- the requested object (colour and shape, ShapesEval's detector) is found with its
centre inside the mask box; **prompt** -- ShapesEval's whole-prompt verdict for the edited caption (the kept object
must survive too); **psnr_out** -- PSNR (dB) over the pixels outside the mask, against the source scene; **bits_out**
-- the fraction of bits that equal the source's over the tokens the 0.5-threshold edit keeps (every scale): 1 for
that edit by construction, below 1 for a lower threshold (it redraws more tokens), and for a fresh generation it
measures how much of the outside it reproduces by chance. ``reconstruction``
gives the ceiling: the tokenizer's own reconstruction of the source (PSNR outside). Means with 95 % percentile
bootstrap CIs over edits (``infinity_eval.bootstrap``).

    uv run python bench/bench_edit.py [--edits 200] [--thresholds 0.25,0.5,0.75] [--output bench/results/edit_demo.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from bitwise_ar.cli import DEMO_MODEL_DIR
from bitwise_ar.editing import token_masks
from bitwise_ar.pipeline import InfinityPipeline
from infinity_eval.bootstrap import bootstrap_ci
from infinity_shapes.render import RenderConfig, render
from infinity_shapes.score import detect_objects, score_image
from infinity_shapes.spec import COLORS, SHAPES, ObjectGroup, PromptSpec, sample_prompt

MARGIN = 3  # pixels added around the object's box: the shapes are anti-aliased and the detector's blobs bleed
RENDER = RenderConfig(image_size=64, ordered=True, rows=True)  # the demo recipe's data options


def edit_case(rng: np.random.Generator) -> tuple[PromptSpec, PromptSpec, object, np.ndarray, tuple[int, int, int, int]]:
    """(source spec, edited spec, source image, mask uint8 (H, W), box (x0, y0, x1, y1)) of one random edit."""
    spec = sample_prompt(rng, tasks=("two_object", "position"))
    image, placements = render(spec, RENDER, rng)
    which = int(rng.integers(2))
    other = spec.groups[1 - which]
    old = spec.groups[which]
    while True:
        new = ObjectGroup(color=list(COLORS)[int(rng.integers(len(COLORS)))],
                          shape=list(SHAPES)[int(rng.integers(len(SHAPES)))])
        if (new.color, new.shape) not in {(old.color, old.shape), (other.color, other.shape)} and not (
            spec.task == "two_object" and new.shape == other.shape
        ):
            break
    groups = list(spec.groups)
    groups[which] = new
    edited = PromptSpec(task=spec.task, groups=tuple(groups), relation=spec.relation)
    target = next(p for p in placements if (p.color, p.shape) == (old.color, old.shape))
    half = target.size / 2 + MARGIN
    size = RENDER.image_size
    box = (max(0, int(target.cx - half)), max(0, int(target.cy - half)),
           min(size, int(np.ceil(target.cx + half))), min(size, int(np.ceil(target.cy + half))))
    mask = np.zeros((size, size), np.uint8)
    mask[box[1] : box[3], box[0] : box[2]] = 255
    return spec, edited, image, mask, box


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """PSNR (dB, 8-bit peak) between uint8 images over the pixels where ``where`` is True (capped at 60 dB)."""
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2)[where].mean()
    return float(min(60.0, 10 * np.log10(255.0**2 / max(err, 1e-12))))


def region_correct(image, group: ObjectGroup, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    return any(d.color == group.color and d.shape == group.shape and x0 <= d.cx < x1 and y0 <= d.cy < y1
               for d in detect_objects(image))


def bits_agreement(bits: list[torch.Tensor], source: list[torch.Tensor], keeps: list[torch.Tensor]) -> float:
    same = total = 0
    for b, s, keep in zip(bits, source, keeps, strict=True):
        same += int((b[keep] == s.to(b.dtype)[keep]).sum())
        total += int(s[keep].numel())
    return same / total if total else float("nan")


def summarise(rows: list[dict], arm: str, metric: str) -> dict:
    values = [r for r in rows if r["arm"] == arm and not np.isnan(r[metric])]
    if not values:
        return {"mean": None}
    mean = float(np.mean([r[metric] for r in values]))
    low, high = bootstrap_ci(values, lambda rs: float(np.mean([r[metric] for r in rs])), cluster_key="edit",
                             num_samples=1000, seed=0)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values)}


ROW_COLUMNS = ("edit", "arm", "region", "prompt_correct", "psnr_out", "bits_out")


def compact(rows: list[dict]) -> dict:
    """Per-edit rows as a table (one caption/box per edit, one short row per arm) to keep the results file small."""
    cases = {r["edit"]: {"source": r["source"], "prompt": r["prompt"], "box": r["box"]}
             for r in rows if r["arm"] != "reconstruction"}
    table = [[round(r[c], 4) if isinstance(r[c], float) and not np.isnan(r[c]) else (None if isinstance(r[c], float)
              else r[c]) for c in ROW_COLUMNS] for r in rows]  # fmt: skip
    return {"cases": [cases[i] for i in sorted(cases)], "row_columns": list(ROW_COLUMNS), "rows": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--thresholds", default="0.25,0.5,0.75", help="mask thresholds of the edit arms")
    parser.add_argument("--weights", type=Path, default=DEMO_MODEL_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("bench/results/edit_demo.json"))
    args = parser.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    torch.set_num_threads(1)  # the images are tiny: one thread is faster than contended ones on a shared CPU
    pipe = InfinityPipeline.from_pretrained(args.weights)
    size = pipe.defaults.image_size
    layout = pipe.layout_for(image_size=size)
    rng = np.random.default_rng(args.seed)
    rows, seconds = [], {}
    for i in range(args.edits):
        spec, edited, image, mask, box = edit_case(rng)
        which = next(j for j in range(2) if edited.groups[j] != spec.groups[j])
        source_u8 = np.asarray(image.convert("RGB"))
        outside = mask == 0
        caption = edited.caption
        arms = {f"edit@{t:g}": lambda t=t, image=image, mask=mask, caption=caption, i=i: pipe.edit(
                    image, caption, mask=mask, mask_threshold=t, seed=i)
                for t in thresholds}
        arms["generate"] = lambda caption=caption, i=i: pipe(caption, image_size=size, seed=i)
        # bits_out is measured for every arm on the same tokens: those the 0.5-threshold edit keeps
        with torch.inference_mode():
            source_bits = pipe.tokenizer.encode(image, schedule=layout.schedule).transformer_bits()
        keeps = [~m[None] for m in token_masks(torch.from_numpy(outside == 0), layout.schedule, 0.5)]
        for arm, run in arms.items():
            t0 = time.perf_counter()
            out = run()
            seconds[arm] = seconds.get(arm, 0.0) + time.perf_counter() - t0
            result = np.asarray(out.images[0])
            rows.append({
                "edit": i, "arm": arm, "source": spec.caption, "prompt": edited.caption, "box": list(box),
                "region": float(region_correct(out.images[0], edited.groups[which], box)),
                "prompt_correct": float(score_image(out.images[0], edited).correct),
                "psnr_out": psnr(result, source_u8, outside),
                "bits_out": bits_agreement(out.bits, source_bits, keeps),
            })
        recon = pipe.tokenizer.reconstruct(image)
        recon_u8 = ((recon[0].clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        rows.append({"edit": i, "arm": "reconstruction", "source": spec.caption, "prompt": spec.caption,
                     "box": list(box), "region": float("nan"), "prompt_correct": float("nan"),
                     "psnr_out": psnr(recon_u8, source_u8, outside), "bits_out": float("nan")})
    # token share redrawn per scale at each threshold, on the last edit's mask (for the table's footnote)
    redrawn = {f"{t:g}": [float(m.float().mean()) for m in token_masks(torch.from_numpy(mask > 0), layout.schedule, t)]
               for t in thresholds}
    arms = [*arms, "reconstruction"]
    summary = {arm: {m: summarise(rows, arm, m) for m in ("region", "prompt_correct", "psnr_out", "bits_out")}
               for arm in arms}
    result = {
        "benchmark": "bench_edit",
        "model": str(args.weights),
        "edits": args.edits,
        "image_size": list(size),
        "schedule": [list(s) for s in layout.schedule],
        "mask_margin_px": MARGIN,
        "sampling": "the model's stored defaults (cfg, per-scale tau, top_k, top_p)",
        "seconds_per_image": {arm: s / args.edits for arm, s in seconds.items()},
        "summary": summary,
        "redrawn_token_share_example": redrawn,
        "platform": platform.platform(),
        "torch": torch.__version__,
        **compact(rows),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({k: v for k, v in result.items() if k not in ("cases", "rows")}, indent=1)
    body = ",\n".join(json.dumps(x, separators=(",", ":")) for x in result["cases"])
    rows_text = ",\n".join(json.dumps(x, separators=(",", ":")) for x in result["rows"])
    args.output.write_text(f'{text[:-2]},\n "cases": [\n{body}\n],\n "rows": [\n{rows_text}\n]\n}}\n')
    print(f"{'arm':<16}{'region':>22}{'prompt':>22}{'PSNR out (dB)':>24}{'bits out':>22}")
    for arm in arms:
        cells = []
        for m in ("region", "prompt_correct", "psnr_out", "bits_out"):
            s = summary[arm][m]
            cells.append("-" if s["mean"] is None else f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]")
        print(f"{arm:<16}" + "".join(f"{c:>22}" for c in cells))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
