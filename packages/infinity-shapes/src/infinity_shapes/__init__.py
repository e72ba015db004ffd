"""ShapesT2I: a synthetic text-to-image task small enough to learn on a laptop, and its analytic scorer ShapesEval.

>>> from infinity_shapes import ShapesT2I, parse_caption, score_image
>>> sample = ShapesT2I(length=10, seed=0)[3]
>>> score_image(sample.image, parse_caption(sample.caption)).correct
True
"""

from infinity_shapes.dataset import ShapesConfig, ShapesSample, ShapesT2I, eval_prompts, write_split
from infinity_shapes.render import BACKGROUND, Placement, RenderConfig, draw, layout, render
from infinity_shapes.score import (
    CHECKS,
    Detection,
    ImageScore,
    ShapesEvalResult,
    aggregate,
    classify_shape,
    detect_objects,
    score_image,
)
from infinity_shapes.spec import (
    COLORS,
    RELATIONS,
    SEMICIRCLE,
    SHAPES,
    TASKS,
    ObjectGroup,
    PromptSpec,
    Shape,
    caption_words,
    extended_vocabulary,
    parse_caption,
    sample_prompt,
)

__all__ = [
    "BACKGROUND",
    "CHECKS",
    "COLORS",
    "RELATIONS",
    "SEMICIRCLE",
    "SHAPES",
    "TASKS",
    "Detection",
    "ImageScore",
    "ObjectGroup",
    "Placement",
    "PromptSpec",
    "RenderConfig",
    "Shape",
    "ShapesConfig",
    "ShapesEvalResult",
    "ShapesSample",
    "ShapesT2I",
    "aggregate",
    "caption_words",
    "classify_shape",
    "detect_objects",
    "draw",
    "eval_prompts",
    "extended_vocabulary",
    "layout",
    "parse_caption",
    "render",
    "sample_prompt",
    "score_image",
    "write_split",
]
