"""`mnistlab data ...` (list, info, show, verify, fetch): the datasets, each action's parser beside its
handler, which calls the function of its name in `mnistlab.data` and prints what it returned."""

from __future__ import annotations

import json
import sys

from .. import data
from ..data.registry import ALIASES, list_datasets
from ..tables import print_table


def cmd_data_list(args) -> int:
    rows = [data.status(name, args.data_dir) for name in list_datasets()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_table([[r["name"], r["state"], r["origin"], r["location"]] for r in rows],
                 ["dataset", "state", "read from", "where"])
    print(f"\naliases: {', '.join(f'{a} -> {t}' for a, t in ALIASES.items())}")
    return 0


def cmd_data_info(args) -> int:
    result = data.info(args.name, args.data_dir, download=args.download, verify=not args.no_verify)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['title']} ({result['name']}): {result['description']}")
    print(f"image shape {'x'.join(map(str, result['image_shape']))}, {result['num_classes']} classes, "
          f"license {result['license']}")
    for split, s in result["splits"].items():
        print(f"{split}: {s['count']} examples")
    print()
    counts = [result["splits"][s]["class_counts"] for s in ("train", "test")]
    print_table([[str(i), name, str(tr), str(te)] for i, (name, tr, te) in
                  enumerate(zip(result["classes"], *counts))], ["label", "class", "train", "test"])
    mean = ", ".join(f"{m:.4f}" for m in result["pixel_mean"])
    std = ", ".join(f"{s:.4f}" for s in result["pixel_std"])
    print(f"\npixel mean {mean}, std {std} (train, scaled to [0,1])")
    print(f"content hash {result['content_hash']}")
    print()
    print_table([[f["name"], f["verified"], f["sha256"][:16], f["origin"], f["location"]] for f in result["files"]],
                 ["file", "verified", "sha256", "from", "location"])
    return 0


def cmd_data_show(args) -> int:
    out = data.show(args.name, out=args.out, split=args.split, count=args.count, start=args.start,
                    random=args.random, seed=args.seed, scale=args.scale, data_dir=args.data_dir,
                    download=args.download)
    print(f"wrote {out}")
    return 0


def cmd_data_verify(args) -> int:
    report = data.verify_all(args.name, args.data_dir)
    if report["rows"]:
        print_table(report["rows"], ["dataset", "file", "status", "method", "detail"])
    else:
        print("no dataset files found")
    if report["verdict"]:
        print(f"\n{report['verdict']}", file=sys.stderr)
    return 0 if report["ok"] else 1


def cmd_data_fetch(args) -> int:
    got = data.fetch(args.name, data_dir=args.data_dir, progress=not args.quiet, force=args.force)
    for path in got:
        print(f"downloaded {path}")
    if not got:
        print(f"{args.name}: every file is already present (`mnistlab data list` says where); --force re-downloads")
    return 0


def add(verbs) -> None:
    """The `data` verb and its actions."""
    data_p = verbs.add_parser("data", help="list, inspect, show, verify and fetch datasets")
    data_verbs = data_p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)

    def data_cmd(name: str, help: str, func, with_name: bool = True):
        p = data_verbs.add_parser(name, help=help, description=help)
        if with_name:
            p.add_argument("name", help="dataset name (`mnistlab data list` shows them)")
        p.add_argument("--data-dir", help="directory to look in first (default: $MNISTLAB_DATA_DIR)")
        p.set_defaults(func=func)
        return p

    p = data_cmd("list", "the datasets mnistlab knows, whether each is present and where it is read from",
                 cmd_data_list, with_name=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = data_cmd("info", "sizes, classes, per-class counts, pixel mean/std, content hashes and sources",
                 cmd_data_info)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not present")
    p.add_argument("--no-verify", action="store_true", help="skip hash verification (for re-compressed copies "
                   "of datasets whose content hash is not pinned)")

    p = data_cmd("show", "write a labelled grid of images to a PNG file", cmd_data_show)
    p.add_argument("--split", default="train", choices=["train", "test"], help="which split (default: train)")
    p.add_argument("--count", type=int, default=25, help="number of images (default: 25)")
    p.add_argument("--start", type=int, default=0, help="index of the first image (default: 0)")
    p.add_argument("--random", action="store_true", help="a random sample instead of consecutive images")
    p.add_argument("--seed", type=int, default=0, help="seed for --random (default: 0)")
    p.add_argument("--scale", type=int, default=3, help="pixels per image pixel (default: 3)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not present")

    p = data_cmd("verify", "re-hash the dataset's files on disk against the pinned hashes (NAME may be 'all')",
                 cmd_data_verify)

    p = data_cmd("fetch", "download the dataset's missing files into the user cache, with a progress bar",
                 cmd_data_fetch)
    p.add_argument("--force", action="store_true", help="download again even if the files are present")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
