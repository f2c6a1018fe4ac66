"""The questions `mnistlab data` answers: what is there (status, `status_all`), what is in it (info), is
it intact (verify, `verify_all`), and what does it look like (show). The command line's `data` actions
are built from these functions' signatures and docstrings (cli/data.py), and print what they return."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from ..errors import MnistlabError
from ..pictures import image_grid, save_png
from ..result_base import Listing, Result
from ..tables import format_table
from . import files
from .dataset import load
from .registry import ALIASES, get_spec, list_datasets

# `verify` statuses: ok (a pin matched), unpinned (nothing to compare with: not ok, not corrupt),
# mismatch / error (corrupt, truncated, unreadable), missing (not found).
FAILED = ("mismatch", "error")


def status(name: str, data_dir=None) -> dict:
    """Where each of a dataset's files would be read from, without reading them."""
    spec = get_spec(name)
    found = {fname: files.locate(spec, f, data_dir) for fname, f in spec.files.items()}
    present = [loc for loc in found.values() if loc is not None]
    origins = sorted({loc.origin for loc in present})
    state = "present" if len(present) == len(found) else ("partial" if present else "missing")
    return {
        "name": spec.name,
        "title": spec.title,
        "state": state,
        "origin": "+".join(origins) if origins else "download",
        "location": str(next(iter(present)).path.parent) if present else spec.mirrors[0],
        "files": {fname: (str(loc) if loc else None) for fname, loc in found.items()},
    }


def status_all(data_dir: str | None = None) -> Listing:
    """The datasets mnistlab knows, whether each is present and where it is read from.

    Args:
        data_dir: directory to look in first (default: $MNISTLAB_DATA_DIR)
    """
    rows = [status(name, data_dir) for name in list_datasets()]
    return Listing({"title": "datasets", "header": ["name", "state", "origin", "location"], "rows": rows,
                    "note": f"aliases: {', '.join(f'{a} -> {t}' for a, t in ALIASES.items())}"})


class DatasetInfo(Result):
    """A dataset's sizes, classes, per-class counts, pixel statistics, hashes and sources."""

    title = "dataset"

    def headline(self):
        r = self.record
        return [("dataset", f"{r['title']} ({r['name']})"), ("image shape", "x".join(map(str, r["image_shape"]))),
                ("classes", r["num_classes"]), *((s, f"{v['count']:,} examples") for s, v in r["splits"].items())]

    def __str__(self) -> str:
        r = self.record
        counts = [r["splits"][s]["class_counts"] for s in ("train", "test")]
        per_class = format_table([[str(i), name, str(tr), str(te)] for i, (name, tr, te) in
                                  enumerate(zip(r["classes"], *counts))], ["label", "class", "train", "test"])
        sources = format_table([[f["name"], f["verified"], f["sha256"][:16], f["origin"], f["location"]]
                                for f in r["files"]], ["file", "verified", "sha256", "from", "location"])
        mean, std = (", ".join(f"{v:.4f}" for v in r[k]) for k in ("pixel_mean", "pixel_std"))
        return "\n".join([f"{r['title']} ({r['name']}): {r['description']}",
                          f"image shape {'x'.join(map(str, r['image_shape']))}, {r['num_classes']} classes, "
                          f"license {r['license']}",
                          *(f"{split}: {s['count']} examples" for split, s in r["splits"].items()), "", per_class,
                          f"\npixel mean {mean}, std {std} (train, scaled to [0,1])",
                          f"content hash {r['content_hash']}", "", sources])


def info(name: str, data_dir: str | None = None, *, download: bool = False, verify: bool = True) -> DatasetInfo:
    """Sizes, classes, per-class counts, pixel mean/std, content hashes and sources of a dataset.

    Args:
        name: dataset name (`mnistlab data list` shows them)
        data_dir: directory to look in first (default: $MNISTLAB_DATA_DIR)
        download: download the dataset if it is not present
        verify: check the files' hashes (--no-verify: skip hash verification, for re-compressed copies of
            datasets whose content hash is not pinned)
    """
    ds = load(name, data_dir=data_dir, download=download, verify=verify)
    mean, std = ds.stats
    return DatasetInfo({
        "name": ds.name,
        "title": ds.spec.title,
        "description": ds.spec.description,
        "image_shape": list(ds.image_shape),
        "num_classes": ds.num_classes,
        "classes": list(ds.classes),
        "splits": {
            s.name: {"count": len(s), "class_counts": s.class_counts().tolist()} for s in (ds.train, ds.test)
        },
        "pixel_mean": list(mean),
        "pixel_std": list(std),
        "content_hash": ds.content_hash,
        "files": [r.as_dict() for r in ds.sources],
        "homepage": ds.spec.homepage,
        "license": ds.spec.license,
        "citation": ds.spec.citation,
    })


def verify(name: str, data_dir=None) -> list[dict]:
    """Re-hash every file of a dataset found on disk (not the decoded cache: what is on disk), one
    result per file: status ok, unpinned, mismatch, error or missing (see FAILED)."""
    spec = get_spec(name)
    results = []
    archives_ok: set[Path] = set()
    for fname, file in spec.files.items():
        loc = files.locate(spec, file, data_dir)
        if loc is None:
            results.append({"file": fname, "status": "missing", "location": None, "detail": "not found"})
            continue
        try:
            raw = None
            if loc.member:
                if loc.path not in archives_ok:  # hashed again whatever its stamp says, once per call
                    files.check_archive(spec, loc.path, remember=False)
                    archives_ok.add(loc.path)
                raw = files.read_members(spec, loc.path, [loc], verify=False)[fname]
            _, record = files.read_file(spec, loc, use_cache=False, raw=raw)
        except MnistlabError as exc:
            failed = "mismatch" if isinstance(exc, files.HashMismatch) else "error"
            results.append({"file": fname, "status": failed, "location": str(loc), "detail": exc.message})
            continue
        if record.verified == "unpinned":
            results.append({"file": fname, "status": "unpinned", "location": str(loc), "method": "none",
                            "detail": f"nothing pinned for this copy to compare with (content SHA-256 "
                            f"{record.sha256}): not verified"})
        else:
            detail = record.sha256 if record.verified == "sha256" else (
                spec.archives[file.archive].md5 if loc.member else file.md5)
            results.append({"file": fname, "status": "ok", "location": str(loc), "method": record.verified,
                            "detail": detail})
    return results


class Verification(Result):
    """Each file's verdict and the verdict on them all: rows [dataset, file, status, method, detail], `ok`,
    and `verdict` (what failed and what to do; "" where all is well)."""

    title = "verification"

    def headline(self):
        return [("files", len(self.record["rows"])), ("verdict", self.record["verdict"] or "verified")]

    def __str__(self) -> str:
        rows = self.record["rows"]
        return format_table(rows, ["dataset", "file", "status", "method", "detail"]) if rows \
            else "no dataset files found"


def verify_all(name: str, data_dir: str | None = None) -> Verification:
    """Re-hash the dataset's files on disk against the pinned hashes (NAME may be 'all').

    Args:
        name: dataset name (`mnistlab data list` shows them), or all
        data_dir: directory to look in first (default: $MNISTLAB_DATA_DIR)
    """
    names = list_datasets() if name == "all" else [name]
    rows, statuses = [], []
    for n in names:
        for r in verify(n, data_dir):
            if name == "all" and r["status"] == "missing":  # all: what is here; one dataset: all of it
                continue
            statuses.append(r["status"])
            rows.append([n, r["file"], r["status"], r.get("method", ""), r["detail"]])
    verdict = ""
    if {"mismatch", "error"} & set(statuses) or (name != "all" and "missing" in statuses):
        verdict = "verification FAILED: delete the bad files and fetch them again (`mnistlab data fetch NAME`)"
    elif "unpinned" in statuses:
        verdict = (f"NOT VERIFIED: {statuses.count('unpinned')} file(s) have no pinned hash to compare with (an "
                   "unpacked archive or a re-compressed copy); keep the files as their publisher distributes them, "
                   "or compare the content SHA-256 above with a copy you trust")
    return Verification({"rows": rows, "ok": not verdict, "verdict": verdict})


def show(name: str, *, out: str | os.PathLike, split: Literal["train", "test"] = "train", count: int = 25,
         start: int = 0, random: bool = False, seed: int = 0, scale: int = 3, data_dir: str | None = None,
         download: bool = False) -> Path:
    """Write a labelled grid of images to a PNG file.

    Args:
        name: dataset name (`mnistlab data list` shows them)
        out: PNG file to write
        split: which split
        count: number of images
        start: index of the first image
        random: a random sample instead of consecutive images
        seed: seed for --random
        scale: pixels per image pixel
        data_dir: directory to look in first (default: $MNISTLAB_DATA_DIR)
        download: download the dataset if it is not present
    """
    if count < 1 or count > 1024:
        raise MnistlabError(f"--count {count}: expected 1 to 1024 images")
    if not 1 <= scale <= 16:
        raise MnistlabError(f"--scale {scale}: expected 1 to 16")
    ds = load(name, data_dir=data_dir, download=download)
    part = ds.split(split)
    if random:
        idx = torch.randperm(len(part), generator=torch.Generator().manual_seed(seed))[:count]
    else:
        if not 0 <= start < len(part):
            raise MnistlabError(f"--start {start}: expected 0 to {len(part) - 1} for {name}'s {split} split")
        idx = torch.arange(start, min(start + count, len(part)))
    images = part.images[idx].numpy()
    captions = [f"{int(i)}: {ds.classes[int(y)]}" for i, y in zip(idx, part.labels[idx])]
    return save_png(image_grid(images, captions, scale=scale), out)
