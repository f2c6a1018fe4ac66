"""The bounds on what a request, an image or a client may cost: defaults for `open_image` and the
server, one `mnistlab serve` flag each. No web imports here, so the CLI can read them cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..data.images import MAX_DECODES, MAX_PIXELS
from ..errors import MnistlabError


def _limit(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Limits:
    """What one request or client may cost the server (see `mnistlab.serving.server`)."""

    max_body: int = _limit(5 * 1024 * 1024, "bytes of a request body")
    max_pixels: int = _limit(MAX_PIXELS, "pixels an image's header may declare (checked before decoding)")
    body_timeout: float = _limit(30.0, "seconds for a whole request body to arrive")
    header_timeout: float = _limit(10.0, "seconds for a request's headers to arrive")
    keep_alive: int = _limit(5, "seconds an idle kept-alive connection stays open")
    max_connections: int = _limit(1000, "open connections in all")
    max_per_client: int = _limit(64, "open connections from one address")
    max_inflight: int = _limit(32, "predict requests reading their body or being served at once; more wait")
    max_queue: int = _limit(16, "predict requests waiting for one of those places; more get a fast 503 with "
                            "Retry-After instead of an unbounded wait")
    max_wait: float = _limit(0.2, "seconds a predict request may have waited, once read, before it is served; "
                             "older ones get a fast 503 with Retry-After (a drawing's answer is stale by then)")
    decoders: int = _limit(MAX_DECODES, "worker threads decoding images and running the model")

    def __post_init__(self):
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise MnistlabError(f"--{f.name.replace('_', '-')} {getattr(self, f.name)!r}: expected a positive "
                                    "number")
