"""Ablations on ShapesT2I with the demo recipe (same data, same steps, same batch; one change per arm).

* ``teacher_forcing``: Bitwise Self-Correction off (paper Table 7 direction: BSC should score higher).
* ``ivc_d8`` vs ``index_d8`` (and ``ivc_d12`` vs ``index_d12``): on an 8-bit (12-bit) tokenizer, the
  Infinite-Vocabulary Classifier (2 logits per bit) vs a conventional 2^d-way index classifier (paper Table 5
  direction).
* ``index_d16``: the 65,536-way index head on the demo's 16-bit tokenizer, against the ``bsc`` arm (IVC, d = 16).
  Its head alone costs about 7.6x the FLOPs of the whole IVC model per step, so equal compute means fewer steps
  (``train.steps``; docs/training.md).

``python -m infinity_shapes.ablation WORK_DIR ARM [overrides...]`` trains one arm (resumable) and writes
``WORK_DIR/<arm>/shapes_eval.json``; the BSC / d16 arm is the demo run itself. The arms reported in
docs/training.md ran before the demo config switched to ordered layouts: add ``data.options.ordered=false`` to
reproduce them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from infinity_shapes.recipe import (
    DEMO_TOKENIZER_STEPS,
    build_demo_text_encoder,
    evaluate_pipeline,
    export_pipeline,
    train_demo_ar,
    train_demo_tokenizer,
)

ARMS: dict[str, dict] = {
    "bsc": {"tokenizer_bits": 16, "overrides": []},
    "teacher_forcing": {"tokenizer_bits": 16, "overrides": ["train.teacher_forcing=true"]},
    "ivc_d8": {"tokenizer_bits": 8, "overrides": ["model.overrides.codebook_dim=8"]},
    "index_d8": {"tokenizer_bits": 8, "overrides": ["model.overrides.codebook_dim=8", 'model.overrides.head_type="index"']},
    "ivc_d12": {"tokenizer_bits": 12, "overrides": ["model.overrides.codebook_dim=12"]},
    "index_d12": {"tokenizer_bits": 12, "overrides": ["model.overrides.codebook_dim=12", 'model.overrides.head_type="index"']},
    "index_d16": {"tokenizer_bits": 16, "overrides": ['model.overrides.head_type="index"']},
}

logger = logging.getLogger(__name__)


def run_arm(
    work_dir: str,
    arm: str,
    overrides: list[str] | None = None,
    *,
    num_prompts: int = 240,
    tokenizer_steps: int | None = None,
) -> dict:
    """Train (or resume) one arm, export its pipeline, score it with ShapesEval; returns the result dict."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose one of {sorted(ARMS)}")
    spec = ARMS[arm]
    work = Path(work_dir)
    tok_run = work / f"tokenizer_d{spec['tokenizer_bits']}"
    if spec["tokenizer_bits"] == 16 and (work / "tokenizer_run" / "tokenizer").is_dir():
        tok_run = work / "tokenizer_run"
    if not (tok_run / "tokenizer" / "config.json").is_file():
        train_demo_tokenizer(str(tok_run), steps=tokenizer_steps or DEMO_TOKENIZER_STEPS, codebook_dim=spec["tokenizer_bits"])
    t5 = build_demo_text_encoder(str(work / "text_encoder"))
    trainer = train_demo_ar(str(work / arm), str(tok_run / "tokenizer"), t5, overrides=[*spec["overrides"], *(overrides or [])])
    pipe = export_pipeline(trainer, str(work / arm / "pipeline"))
    result, _, _ = evaluate_pipeline(pipe, num_prompts=num_prompts)
    out = {"arm": arm, "steps": trainer.step, "overrides": spec["overrides"] + list(overrides or []), **result.as_dict()}
    (work / arm / "shapes_eval.json").write_text(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m infinity_shapes.ablation WORK_DIR ARM [overrides...]``; the result goes to ARM/shapes_eval.json."""
    parser = argparse.ArgumentParser(prog="python -m infinity_shapes.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("work_dir")
    parser.add_argument("arm")
    parser.add_argument("--tokenizer-steps", type=int, default=None, help="when the arm's tokenizer is trained (default: the demo's)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for the AR config, e.g. train.steps=2000")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        result = run_arm(args.work_dir, args.arm, args.overrides, tokenizer_steps=args.tokenizer_steps)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))  # one line on stderr, exit code 2
    logger.info("ablation %s: %s", args.arm, json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
