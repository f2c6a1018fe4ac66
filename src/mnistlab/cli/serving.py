"""The verbs that put a model to use: predict, serve, export. Each parser sits beside its handler,
which calls `mnistlab.predict`, `mnistlab.serve` or `mnistlab.export`."""

from __future__ import annotations

import json

from .. import api
from ..serving.prediction import NOT_DIGIT_THRESHOLD
from ..tables import printable
from .common import add_limit_flags, add_trust_flag, limits


def add_predict(verbs) -> None:
    p = verbs.add_parser("predict", help="read digits in your own images (PNG, JPEG, BMP, GIF, WebP)",
                         description="Bring each image into MNIST's form (grayscale, light on dark, ink cropped, "
                         "longer side 20 px, centre of mass at the centre of 28x28) and classify it. Flags "
                         "pictures that are probably not a single digit (see `mnistlab.serving.prediction`).")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", help="run directory, checkpoint or ensemble file (default: the packaged model)")
    p.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 images the model saw")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_trust_flag(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    results = api.predict(args.images, model=args.model, save_preprocessed=args.save_preprocessed,
                           trust_code=args.trust_code)
    if args.json:  # how to print, not what to do: the function returns the same objects
        print(json.dumps([dict(r.as_dict(), file=str(f)) for f, r in zip(args.images, results)], indent=2))
        return 0
    for f, r in zip(args.images, results):
        top = ", ".join(f"{d} {p:.1%}" for d, p in r.top3)
        verdict = "" if r.is_digit else (f"  [not a digit? score {r.not_digit:.2f} >= "
                                         f"{NOT_DIGIT_THRESHOLD}: {'; '.join(r.reasons)}]")
        print(printable(f"{f}: {r.digit} ({r.probability:.1%}; top 3: {top}){verdict}"))  # names from a checkpoint
    if args.save_preprocessed:
        print(f"wrote the 28x28 images the model saw to {args.save_preprocessed}/")
    return 0


def add_serve(verbs) -> None:
    p = verbs.add_parser("serve", help="the draw-a-digit web page and HTTP API",
                         description="Serve the draw-a-digit page at / and the API at /api/predict, /api/health, "
                         "/api/model (OpenAPI at /docs). Every cost a request can cause is bounded by the "
                         "limits below.")
    p.add_argument("--model", help="run directory, checkpoint or ensemble file (default: the packaged model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each with its own model (default: 1; one per CPU "
                   "core holds the most requests; the limits apply per worker)")
    p.add_argument("--backend", choices=["auto", "pytorch"], default="auto",
                   help="auto: the model in ONNX Runtime when installed (about 5x faster per image), else PyTorch")
    p.add_argument("--access-log", action="store_true", help="log a line per request (off: it costs ~5%% of a "
                   "prediction's time at classroom rates)")
    add_limit_flags(p)
    add_trust_flag(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    api.serve(args.model, host=args.host, port=args.port, workers=args.workers, backend=args.backend,
              access_log=args.access_log, **limits(args), trust_code=args.trust_code)
    return 0


def add_export(verbs) -> None:
    p = verbs.add_parser("export", help="export a model or mean ensemble to ONNX")
    p.add_argument("model", help="run directory, checkpoint or ensemble file")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format (default: onnx)")
    p.add_argument("--out", help="output file (default: NAME.onnx)")
    p.add_argument("--not-digit", action="store_true",
                   help="a second output, not_digit_score (above 0.5: not a digit); the file grows by the "
                        "reference features (47 MB for the packaged model)")
    add_trust_flag(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    r = api.export(args.model, format=args.format, out=args.out, not_digit=args.not_digit, trust_code=args.trust_code)
    print(f"wrote {r['file']}")
    return 0


def add(verbs) -> None:
    for add_verb in (add_predict, add_serve, add_export):
        add_verb(verbs)
