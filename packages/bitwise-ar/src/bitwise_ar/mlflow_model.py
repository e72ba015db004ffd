"""An :class:`~bitwise_ar.pipeline.InfinityPipeline` as an MLflow model (pyfunc), so a trained pipeline can be
registered in the Model Registry and loaded back with ``mlflow.pyfunc.load_model``.

The pipeline directory is logged as the model's artifact; ``predict`` takes a DataFrame with a ``prompt`` column
and returns a DataFrame with the prompt, the seed and the image as PNG bytes.
Params (all optional): ``seed`` (first seed; prompt i uses seed + i), ``cfg`` and ``tau`` (< 0: the pipeline's
stored values).

MLflow is imported only here (``pip install 'bitwise-ar[train]'``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

PIPELINE_ARTIFACT = "pipeline"


def _pyfunc() -> Any:
    try:
        import mlflow.pyfunc
    except ImportError as err:
        raise ImportError("logging a pipeline to MLflow needs MLflow: pip install 'bitwise-ar[train]'") from err
    return mlflow.pyfunc


def _python_model_class() -> type:
    pyfunc = _pyfunc()

    class InfinityPipelineModel(pyfunc.PythonModel):
        """Text -> PNG images with the logged pipeline."""

        def load_context(self, context: Any) -> None:
            from bitwise_ar.pipeline import InfinityPipeline

            self.pipeline = InfinityPipeline.from_pretrained(context.artifacts[PIPELINE_ARTIFACT])

        def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
            import dataclasses

            import pandas as pd

            prompts = list(model_input["prompt"]) if hasattr(model_input, "columns") else list(model_input)
            params = params or {}
            seed = int(params.get("seed", 0))
            sampling = self.pipeline.defaults.sampling
            changes = {k: float(params[k]) for k in ("cfg", "tau") if params.get(k) is not None and float(params[k]) >= 0}
            if changes:
                sampling = dataclasses.replace(sampling, **changes)
            rows = []
            for i, prompt in enumerate(prompts):
                image = self.pipeline(
                    [str(prompt)], seed=seed + i, sampling=sampling, image_size=self.pipeline.defaults.image_size
                ).images[0]
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                rows.append({"prompt": str(prompt), "seed": seed + i, "image_png": buffer.getvalue()})
            return pd.DataFrame(rows)

    return InfinityPipelineModel


def log_pipeline(
    pipeline_dir: str | Path,
    *,
    run_id: str,
    tracking_uri: str,
    name: str = "model",
    registered_model_name: str | None = None,
) -> str:
    """Log ``pipeline_dir`` into run ``run_id`` as a pyfunc model (registered as ``registered_model_name`` when
    given); returns the model URI to load it back with ``mlflow.pyfunc.load_model``."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    pyfunc = _pyfunc()
    signature = infer_signature(
        pd.DataFrame({"prompt": ["a red circle"]}),
        pd.DataFrame({"prompt": ["a red circle"], "seed": [0], "image_png": [b""]}),
        params={"seed": 0, "cfg": -1.0, "tau": -1.0},
    )
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = pyfunc.log_model(
            name=name,
            python_model=_python_model_class()(),
            artifacts={PIPELINE_ARTIFACT: str(pipeline_dir)},
            signature=signature,
            registered_model_name=registered_model_name,
        )
    return info.model_uri
