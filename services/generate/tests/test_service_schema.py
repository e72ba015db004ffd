"""Request parsing: a model's stored per-scale sampling values are the defaults of requests that leave them out."""

from infinity_service.config import Limits
from infinity_service.schema import parse_image_request

DEFAULTS = {"aspect_ratio": "1:1", "resolution": "0.06M", "cfg": 3.0, "tau": [1.5, 1.5, 1.0, 0.5, 0.5],
            "top_k": 900, "top_p": 0.97, "native_size": None}  # fmt: skip


def test_per_scale_default_is_kept_and_a_request_value_replaces_it():
    limits = Limits()
    left_out = parse_image_request({"prompt": "a red circle"}, limits, DEFAULTS)
    assert left_out.tau == (1.5, 1.5, 1.0, 0.5, 0.5) and left_out.cfg == 3.0
    given = parse_image_request({"prompt": "a red circle", "tau": 0.7}, limits, DEFAULTS)
    assert given.tau == 0.7
