"""The packaged default model: what `predict` and `serve` use without --model, so both work on a
fresh machine with no network (`_models/README.md` says how it was made)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "_models" / "default.safetensors"
