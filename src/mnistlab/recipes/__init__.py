"""Packaged training recipes: one TOML file each; `mnistlab train --recipe NAME`."""
