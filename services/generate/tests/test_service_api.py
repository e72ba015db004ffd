"""The HTTP API against a real uvicorn server on loopback with a real client (httpx) and a tiny real pipeline."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from infinity_service import ServiceConfig
from infinity_service.app import create_app
from infinity_service.server import run_in_thread
from PIL import Image

KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def client(service_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service_url, timeout=300) as c:
        yield c


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


@pytest.fixture(scope="module")
def direct_pipe(tiny_model_dir: Path) -> object:
    """The pipeline loaded separately from the service's, to call directly."""
    from bitwise_ar.pipeline import InfinityPipeline

    return InfinityPipeline.from_pretrained(tiny_model_dir)


def _direct(pipe: object, prompts: list[str], seed: int, **kw: object) -> list[np.ndarray]:
    from bitwise_ar.sampling import SamplingConfig

    out = pipe(prompts, seed=seed, aspect_ratio=kw.get("aspect_ratio", "1:1"), resolution="0.06M",
               sampling=SamplingConfig(cfg=3.0, tau=1.0, top_k=900, top_p=0.97))  # fmt: skip
    return [np.asarray(im) for im in out.images]


def test_health_and_models(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    (model,) = client.get("/v1/models").json()["data"]
    assert model["id"] == "tiny-model"
    assert model["defaults"]["resolution"] == "0.06M"
    assert model["batches_across_requests"] is True  # the pipeline takes one generator per image
    assert "X-Request-ID" in health.headers


def test_images_match_the_pipeline_called_directly(client: httpx.Client, direct_pipe: object) -> None:
    response = client.post("/v1/images", json={"prompt": "two red circles", "seed": 7, "aspect_ratio": "4:3"})
    assert response.status_code == 200, response.text
    (image,) = response.json()["images"]
    got = _decode(image["png_base64"])
    assert got.shape == (240, 320, 3)  # 4:3 (W:H) at 0.06M is 320x240
    (expected,) = _direct(direct_pipe, ["two red circles"], 7, aspect_ratio="4:3")
    assert np.array_equal(got, expected)
    # The PNG response is the same image, and another seed gives another image.
    png = client.post("/v1/images", json={"prompt": "two red circles", "seed": 7, "aspect_ratio": "4:3",
                                          "response_format": "png"})  # fmt: skip
    assert png.headers["content-type"] == "image/png" and png.headers["X-Seed"] == "7"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB")), expected)
    other = client.post("/v1/images", json={"prompt": "two red circles", "seed": 8, "aspect_ratio": "4:3"})
    assert not np.array_equal(_decode(other.json()["images"][0]["png_base64"]), expected)


def test_several_prompts_and_copies_batch_reproducibly(client: httpx.Client, direct_pipe: object) -> None:
    prompts = ["a blue square", "a yellow star"]
    response = client.post("/v1/images", json={"prompt": prompts, "count": 2, "seed": 11})
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert [(im["prompt"], im["seed"]) for im in images] == [
        ("a blue square", 11),
        ("a blue square", 12),
        ("a yellow star", 11),
        ("a yellow star", 12),
    ]
    # The four images were generated in one batch, and each equals the pipeline called alone with its seed.
    assert [im["batch_size"] for im in images] == [4, 4, 4, 4]
    for i, prompt, seed in ((0, "a blue square", 11), (3, "a yellow star", 12)):
        (expected,) = _direct(direct_pipe, [prompt], seed)
        assert np.array_equal(_decode(images[i]["png_base64"]), expected), f"image {i}"


def test_concurrent_requests_are_batched_reproducibly(engine: object, direct_pipe: object) -> None:
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from infinity_service.engine import GenerationEngine

    # A second engine on the same loaded pipeline that waits up to 5 s for companions: three requests sent at
    # once become one batch of three.
    config = dataclasses.replace(engine.config, batch_wait_ms=5000, max_batch_size=3)
    batching = GenerationEngine(engine.pipeline, config, model_name="tiny-model",
                                per_sample_generators=engine.per_sample_generators).start()  # fmt: skip
    bodies = [{"prompt": p, "seed": s} for p, s in (("a red circle", 1), ("two green squares", 2), ("a cat", 3))]
    try:
        with run_in_thread(create_app(config, batching)) as url, httpx.Client(base_url=url, timeout=300) as c:
            with ThreadPoolExecutor(3) as pool:
                responses = list(pool.map(lambda body: c.post("/v1/images", json=body), bodies))
            assert c.get("/healthz").json()["stats"]["max_batch"] == 3
    finally:
        batching.stop()
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        (image,) = response.json()["images"]
        assert image["batch_size"] == 3
        (expected,) = _direct(direct_pipe, [body["prompt"]], body["seed"])
        assert np.array_equal(_decode(image["png_base64"]), expected), body


def test_stream_sends_every_scale_then_the_image(client: httpx.Client) -> None:
    events = []
    with client.stream("POST", "/v1/images/stream", json={"prompt": "a green triangle", "seed": 7}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    names = [n for n, _ in events]
    previews = [d for n, d in events if n == "preview"]
    assert names[:2] == ["queued", "started"] and names[-2:] == ["image", "done"]
    assert [p["scale"] for p in previews] == list(range(1, 8))  # 0.06M has 7 scales, coarse to fine
    assert previews[0]["grid"] == [1, 1] and previews[-1]["grid"] == [16, 16]
    final = dict(events)["image"]
    # The finest preview is the final image; a JSON request with the same seed returns it too.
    assert np.array_equal(_decode(previews[-1]["png_base64"]), _decode(final["png_base64"]))
    same = client.post("/v1/images", json={"prompt": "a green triangle", "seed": 7}).json()["images"][0]
    assert np.array_equal(_decode(same["png_base64"]), _decode(final["png_base64"]))


def test_unknown_words_come_back_as_warnings(client: httpx.Client) -> None:
    from infinity_service.schema import ImagesResponse

    body = {"prompt": ["two red circles", "a zebra and a giraffe"], "seed": 3}
    answer = ImagesResponse.model_validate(client.post("/v1/images", json=body).json())
    assert answer.images[0].warnings == []
    (warning,) = answer.images[1].warnings
    assert "'zebra', 'giraffe'" in warning and "does not know" in warning
    assert answer.warnings == [f"'a zebra and a giraffe': {warning}"]
    clean = ImagesResponse.model_validate(client.post("/v1/images", json={"prompt": "a red star"}).json())
    assert clean.warnings == [] and clean.images[0].warnings == []
    # The streamed image event carries the same warning (the web page shows it).
    with client.stream("POST", "/v1/images/stream", json={"prompt": "a zebra", "seed": 3}) as response:
        data = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    (image,) = [d for d in data if "png_base64" in d and "prompt" in d]
    assert len(image["warnings"]) == 1 and "'zebra'" in image["warnings"][0]


BAD_REQUESTS = [
    ("missing-prompt", {"seed": 1}, 422, "'prompt' is required"),
    ("empty-prompt", {"prompt": "   "}, 422, "'prompt' is empty"),
    ("empty-list", {"prompt": []}, 422, "empty list"),
    ("oversized-prompt", {"prompt": "a" * 1001}, 413, "limit is 1000"),
    ("too-many-images", {"prompt": ["a", "b", "c"], "count": 3}, 413, "limit per request"),
    ("bad-aspect", {"prompt": "a", "aspect_ratio": "wide"}, 422, "cannot parse aspect ratio"),
    ("extreme-aspect", {"prompt": "a", "aspect_ratio": "8:1"}, 422, "1:3 to 3:1"),
    ("cfg-out-of-range", {"prompt": "a", "cfg": 50}, 422, "'cfg' must be in [0, 20]"),
    ("cfg-not-number", {"prompt": "a", "cfg": "high"}, 422, "'cfg' must be a number"),
    ("tau-zero", {"prompt": "a", "tau": 0}, 422, "'tau' must be in"),
    ("bad-resolution", {"prompt": "a", "resolution": "1M"}, 422, "'resolution' must be one of"),
    ("negative-seed", {"prompt": "a", "seed": -1}, 422, "'seed' must be in"),
    ("unknown-field", {"prompt": "a", "steps": 50}, 422, "unknown field(s) ['steps']"),
    ("png-for-many", {"prompt": "a", "count": 2, "response_format": "png"}, 422, "exactly one image"),
    ("not-an-object", ["a"], 400, "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "status", "message"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_invalid_input_is_a_clear_4xx(client: httpx.Client, body: object, status: int, message: str) -> None:
    response = client.post("/v1/images", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200


def test_malformed_json_and_oversized_body(client: httpx.Client) -> None:
    response = client.post("/v1/images", content=b'{"prompt": "a red', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]["message"]
    huge = json.dumps({"prompt": "a", "negative_prompt": "b" * 70_000}).encode()
    response = client.post("/v1/images", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit of 65536" in response.text.replace("is 65536", "limit of 65536")
    assert client.get("/nope").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_queue_full_is_a_clean_503(client: httpx.Client) -> None:
    # max_queue is 6 images: a request for 8 can never fit -> 503 with Retry-After, nothing queued.
    response = client.post("/v1/images", json={"prompt": ["a", "b", "c", "d"], "count": 2})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert "queue full" in response.json()["error"]["message"]
    assert client.get("/healthz").json()["queue_depth"] == 0


def test_api_key_auth(engine: object) -> None:
    import dataclasses

    config = dataclasses.replace(engine.config, api_keys=(KEY,))
    with run_in_thread(create_app(config, engine)) as url, httpx.Client(base_url=url, timeout=300) as c:
        assert c.get("/v1/models").status_code == 401
        wrong = c.post("/v1/images", json={"prompt": "a"}, headers={"Authorization": "Bearer wrong-key-0123456789"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
        assert c.get("/healthz").status_code == 200  # health stays open for load balancers
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": KEY}).status_code == 200


def test_config_errors_are_clear(tmp_path: Path) -> None:
    from infinity_service import load_service_config

    with pytest.raises(ValueError, match=r"override 'service.prot=1': unknown key 'prot' in service; valid keys: .*'port'"):
        load_service_config(None, ["service.prot=1"])
    with pytest.raises(ValueError, match="at least 16 characters"):
        ServiceConfig(api_keys=("short",))
    config = load_service_config(
        Path(__file__).parents[1] / "configs" / "local.toml", ["service.port=9000", "service.limits.max_count=2"]
    )
    assert (config.host, config.port, config.limits.max_count) == ("127.0.0.1", 9000, 2)


def test_demo_model_serves_its_native_size_by_default(demo_url: str, demo_model_dir: Path) -> None:
    from bitwise_ar.pipeline import InfinityPipeline

    pipe = InfinityPipeline.from_pretrained(demo_model_dir)
    height, width = pipe.defaults.image_size
    with httpx.Client(base_url=demo_url, timeout=300) as c:
        (model,) = c.get("/v1/models").json()["data"]
        assert model["id"] == "demo_model"
        assert model["resolutions"][0] == "native" and model["defaults"]["resolution"] == "native"
        assert model["defaults"]["native_size"] == [height, width]
        # Omitted fields take the model's defaults: native size and its stored sampling settings.
        response = c.post("/v1/images", json={"prompt": "a red circle", "seed": 2})
        assert response.status_code == 200, response.text
        got = _decode(response.json()["images"][0]["png_base64"])
        assert got.shape == (height, width, 3)
        assert np.array_equal(got, np.asarray(pipe(["a red circle"], seed=2, image_size=(height, width)).images[0]))
        # Another shape needs a named resolution; the native size does not stretch.
        bad = c.post("/v1/images", json={"prompt": "a", "aspect_ratio": "16:9"})
        assert bad.status_code == 422 and "does not match the model's native size" in bad.json()["error"]["message"]
        wide = c.post("/v1/images", json={"prompt": "a", "resolution": "0.06M", "aspect_ratio": "16:9"})
        assert wide.status_code == 200, wide.text
        (grid_h, grid_w) = pipe.layout_for(aspect_ratio="16:9", resolution="0.06M").schedule[-1]
        stride = pipe.tokenizer.config.patch_size
        assert _decode(wide.json()["images"][0]["png_base64"]).shape == (grid_h * stride, grid_w * stride, 3)
