"""mnistlab's version: one place, below every module that records it (run logs, pages, the CLI)."""

__version__ = "0.2.0"
