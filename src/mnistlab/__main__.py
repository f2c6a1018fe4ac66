"""`python -m mnistlab ...` is the `mnistlab` command (and what torchrun launches)."""

from .cli import main

raise SystemExit(main())
