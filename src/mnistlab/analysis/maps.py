"""2-D maps of a dataset: UMAP or t-SNE of the raw pixels or of a model's learned features.

    mnistlab map --dataset mnist                                   # UMAP of the test set's pixels
    mnistlab map runs/seed-cnn-mnist-s0                            # of its penultimate features
    mnistlab map runs/seed-cnn-mnist-s0 --method tsne --features pixels --n 5000

The embedding comes from umap-learn or openTSNE (the `maps` extra), seeded. Each map writes, in its
directory (RUN/maps/<method>-<features>-<split>/ for a run, maps/<dataset>-... otherwise):

    map.png      the points coloured by class, the model's mistakes marked with black crosses
    map.html     one self-contained page (no network): hover or tap a point to see the image, its label
                 and the prediction; toggle classes in the legend
    coords.npy   (N, 2) float32 coordinates; coords.csv the same with index, label and prediction
    map.json     what was mapped, how, how long it took, and the 5-NN accuracy in the 2-D map
                 (how well the map separates the classes: leave-one-out, on the map's coordinates)

`mnistlab report RUN` shows a run's maps.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import atomic, pages, rundir
from ..data import load
from ..data.normalization import to_unit
from ..errors import MnistlabError
from ..models.classical import ClassicalModel
from ..models.features import features as features_of
from ..models.predictor import load_predictor
from ..models.source import locate
from ..pictures import pyplot, save_figure
from ..rundir import RunDir

METHODS = ("umap", "tsne")
FEATURES = ("pixels", "penultimate")
MAX_POINTS = 70_000  # all of MNIST; openTSNE and UMAP both handle it
MIN_POINTS = 20  # fewer leave UMAP's 15 neighbours and t-SNE's perplexity nothing to work with
PCA_FIRST = 50  # inputs with more dimensions get a PCA to this many first (see `embed`)
MAP_FILE = RunDir.MAP_FILE


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise MnistlabError(f"mnistlab map needs the {module} package",
                            hint="pip install 'mnistlab[maps]' (umap-learn and openTSNE)") from None


def cache_umap_kernels() -> int:
    """Let numba keep umap-learn's compiled kernels on disk (beside its source, or numba's user cache
    when that is read-only), which umap-learn does not ask for: every new process compiled them again
    before its first map, 10-25 s on 2 AVX2 cores. numba checks the source's timestamp and the
    argument types before reusing a kernel. Returns how many kernels it enabled (once per process)."""
    if _UMAP_CACHING:
        return 0
    import umap.layouts
    import umap.umap_
    from numba.core.registry import CPUDispatcher

    for module in (umap.umap_, umap.layouts):
        for kernel in vars(module).values():
            if isinstance(kernel, CPUDispatcher):
                try:
                    kernel.enable_caching()
                except RuntimeError:  # nowhere numba may write: compiled in each process, as before
                    continue
                _UMAP_CACHING.append(kernel)
    return len(_UMAP_CACHING)


_UMAP_CACHING: list = []  # the kernels cache_umap_kernels enabled


def embed(features: np.ndarray, method: str, seed: int, *, verbose: bool = False,
          threads: int = 0) -> tuple[np.ndarray, dict]:
    """(N, 2) float32 coordinates of `features` (N, D) and the settings used; the same seed, the same map.

    More than PCA_FIRST dimensions get a seeded PCA to PCA_FIRST first, the usual practice for both
    methods (neighbour search on 784 pixels costs 16 times more than on 50 components)."""
    settings: dict = {"pca_first": 0}
    if features.shape[1] > PCA_FIRST and len(features) > PCA_FIRST:
        from sklearn.decomposition import PCA

        features = PCA(PCA_FIRST, random_state=seed).fit_transform(features)
        settings["pca_first"] = PCA_FIRST
    if method == "umap":
        _need("umap")
        import umap
        from sklearn.neighbors import NearestNeighbors

        cache_umap_kernels()

        settings.update({"n_neighbors": min(15, len(features) - 1), "min_dist": 0.1, "metric": "euclidean"})
        # Exact neighbours (scikit-learn, BLAS, every core) in place of UMAP's approximate search: as
        # deterministic, and it spares the numba compilation of that search (44 s of a 61 s first map
        # of 10,000 points, in every new process). A random_state makes UMAP's layout deterministic, and
        # single-threaded.
        dist, idx = NearestNeighbors(n_neighbors=settings["n_neighbors"], n_jobs=threads or -1).fit(
            features).kneighbors(features)
        reducer = umap.UMAP(n_components=2, random_state=seed, n_jobs=1, verbose=verbose,
                            precomputed_knn=(idx, dist, None), **settings_of(settings))
        with warnings.catch_warnings():  # "n_jobs overridden by random_state", "no search index": both meant
            warnings.simplefilter("ignore", UserWarning)
            coords = reducer.fit_transform(features)
    elif method == "tsne":
        _need("openTSNE")
        from openTSNE import TSNE

        settings.update({"perplexity": min(30.0, (len(features) - 1) / 3), "initialization": "pca"})
        tsne = TSNE(n_components=2, random_state=seed, n_jobs=threads or torch.get_num_threads(), verbose=verbose,
                    **settings_of(settings))
        coords = np.asarray(tsne.fit(np.asarray(features, dtype=np.float64)))
    else:
        raise MnistlabError(f"--method {method!r}: expected {' | '.join(METHODS)}")
    return np.asarray(coords, dtype=np.float32), settings


def settings_of(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k != "pca_first"}


def separation(coords: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy on the 2-D coordinates: 1.0 when every class is its own island."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(labels) - 1)
    if k < 1:
        return float("nan")
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)
    votes = labels[idx[:, 1:]]  # drop each point itself
    counts = np.stack([(votes == c).sum(1) for c in range(int(labels.max()) + 1)], 1)
    return float((counts.argmax(1) == labels).mean())


def learned_features(predictor, images_u8: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The penultimate features (what the classifier reads) of a single network for uint8 images."""

    if len(predictor.models) != 1:
        raise MnistlabError(f"{predictor.meta['source']} is an ensemble of {len(predictor.models)} models, each with "
                            "its own features", hint="map one member's run, or use --features pixels")
    model, norm = predictor.models[0], predictor.norms[0]
    if isinstance(model, ClassicalModel):
        raise MnistlabError(f"{predictor.meta['source']} is a {model.name} model: it has no learned features",
                            hint="use --features pixels (its predictions still mark the mistakes)")
    return features_of(model, images_u8, norm, batch_size=batch_size)


def build_map(source: str | None = None, *, dataset: str | None = None, method: str = "umap",
              features: str | None = None, split: str = "test", n: int | None = None, seed: int = 0,
              out: str | None = None, data_dir: str | None = None, quiet: bool = False) -> dict:
    """Embed a split (or `n` images of it drawn with `seed`) in 2-D and write the map's files."""
    if method not in METHODS:
        raise MnistlabError(f"--method {method!r}: expected {' | '.join(METHODS)}")
    features = features or ("penultimate" if source else "pixels")
    if features not in FEATURES:
        raise MnistlabError(f"--features {features!r}: expected {' | '.join(FEATURES)}")
    if features == "penultimate" and not source:
        raise MnistlabError("--features penultimate needs a run (or checkpoint) whose features to map",
                            hint="mnistlab map RUN_DIR, or --features pixels")
    if split not in ("train", "test"):
        raise MnistlabError(f"--split {split!r}: expected train or test")
    located = locate(source) if source else None
    predictor = load_predictor(located.checkpoint) if located else None
    if predictor is None and not dataset:
        dataset = "mnist"
    ds = load(dataset or predictor.meta["dataset"], data_dir=data_dir)
    if predictor is not None and list(predictor.meta["classes"]) != list(ds.classes):
        raise MnistlabError(f"{source} predicts {predictor.meta['dataset']}'s classes, not {ds.name}'s",
                            hint="leave out --dataset to map the data the model was trained on")
    part = ds.split(split)
    total = len(part)
    if n is not None and not MIN_POINTS <= n <= min(total, MAX_POINTS):
        raise MnistlabError(f"--n {n}: expected {MIN_POINTS} to {min(total, MAX_POINTS)} ({ds.name}'s {split} split has {total})")
    if n is None and total > MAX_POINTS:
        n = MAX_POINTS
    if n is not None and n < total:
        index = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    else:
        index = torch.arange(total)
    images, labels = part.images[index], part.labels[index]
    say = (lambda text: None) if quiet else (lambda text: print(text, flush=True))

    t0 = time.perf_counter()
    preds = predictor.probs(images).argmax(1) if predictor is not None else None
    if features == "penultimate":
        x = learned_features(predictor, images).numpy()
    else:
        x = to_unit(images.reshape(len(images), -1)).numpy()
    features_s = time.perf_counter() - t0
    say(f"{features} features of {len(index):,} {ds.name} {split} images: {x.shape[1]} dimensions, {features_s:.1f}s; "
        f"embedding with {method} (seed {seed})...")
    t1 = time.perf_counter()
    coords, settings = embed(x, method, seed)  # their own verbose output dumps whole arrays: we print a line
    embed_s = time.perf_counter() - t1
    y = labels.numpy()
    sep = separation(coords, y)

    if located is not None:  # RUN/maps/M-F-S/, or FILE-maps/M-F-S/ beside a lone checkpoint
        out_dir = located.output_dir(out, RunDir.MAPS, RunDir.map_name(method, features, split))
    else:
        out_dir = rundir.output_dir(out or Path("maps") / f"{ds.name}-{split}-{method}-pixels")
    p = preds.numpy() if preds is not None else None
    title = (f"{ds.name} {split}: {method.upper() if method == 'umap' else 't-SNE'} of "
             f"{'raw pixels' if features == 'pixels' else 'learned features'}"
             + (f" ({predictor.meta['name']})" if predictor is not None else "") + f", {len(index):,} images, seed {seed}")
    atomic.write_bytes(out_dir / "coords.npy", _npy(coords))
    atomic.write_text(out_dir / "coords.csv", _csv(index.numpy(), coords, y, p))
    png = draw_map(coords, y, p, list(ds.classes), title, out_dir / "map.png")
    page = write_page(out_dir / "map.html", coords, y, p, list(ds.classes), images, index.numpy(), title)
    result = {"source": str(source) if source else None, "dataset": ds.name, "split": split, "method": method,
              "features": features, "dimensions": int(x.shape[1]), "n": int(len(index)), "seed": seed,
              "settings": settings, "features_s": features_s, "embed_s": embed_s,
              "threads": 1 if method == "umap" else torch.get_num_threads(),
              "separation_5nn": sep, "model_accuracy": float((p == y).mean()) if p is not None else None,
              "mistakes": int((p != y).sum()) if p is not None else None,
              "files": {"png": str(png), "html": str(page), "npy": str(out_dir / "coords.npy"),
                        "csv": str(out_dir / "coords.csv")}}
    atomic.write_text(out_dir / MAP_FILE, json.dumps(result, indent=2))
    say(f"map in {embed_s:.1f}s; 5-NN accuracy on the map {sep:.2%}; {out_dir}/map.html")
    return result


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _csv(index: np.ndarray, coords: np.ndarray, labels: np.ndarray, preds: np.ndarray | None) -> str:
    lines = ["index,x,y,label" + (",prediction" if preds is not None else "")]
    for i in range(len(index)):
        row = f"{index[i]},{coords[i, 0]:.5f},{coords[i, 1]:.5f},{labels[i]}"
        lines.append(row + (f",{preds[i]}" if preds is not None else ""))
    return "\n".join(lines) + "\n"


def palette(k: int) -> list[str]:
    """k distinct colours: matplotlib's tab10, tab20 for more, then evenly spaced hues."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if k <= 10:
        return [to_hex(colormaps["tab10"](i)) for i in range(k)]
    if k <= 20:
        return [to_hex(colormaps["tab20"](i)) for i in range(k)]
    return [to_hex(colormaps["hsv"](i / k)) for i in range(k)]


def draw_map(coords: np.ndarray, labels: np.ndarray, preds: np.ndarray | None, classes: list[str], title: str,
             out: Path) -> Path:

    plt = pyplot()
    colours = np.array(palette(len(classes)))
    fig, ax = plt.subplots(figsize=(8, 7.2), dpi=110)
    size = max(0.5, min(12.0, 20000 / max(len(labels), 1) ** 1.1))
    ax.scatter(coords[:, 0], coords[:, 1], c=colours[labels], s=size, linewidths=0, rasterized=True)
    for c, name in enumerate(classes):  # each class's name at its median position
        pts = coords[labels == c]
        if len(pts):
            mx, my = np.median(pts, 0)
            ax.text(mx, my, name[:12], fontsize=11, weight="bold", ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colours[c], "alpha": 0.8})
    if preds is not None:
        wrong = preds != labels
        ax.scatter(coords[wrong, 0], coords[wrong, 1], marker="x", c="black", s=14, linewidths=0.8,
                   label=f"misclassified ({int(wrong.sum())})")
        ax.legend(loc="upper right", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, out)


def atlas_png(images: torch.Tensor) -> tuple[bytes, int]:
    """All images tiled in one PNG (row-major, `cols` a row), for the page to crop from; (bytes, cols)."""
    from PIL import Image

    x = images.numpy()
    if x.ndim == 3:
        x = x[:, None]
    n, c, h, w = x.shape
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    sheet = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i in range(n):  # a copy per image: 10,000 small copies take about 20 ms
        r, q = divmod(i, cols)
        sheet[r * h:(r + 1) * h, q * w:(q + 1) * w] = x[i].transpose(1, 2, 0)
    img = Image.fromarray(sheet[..., 0] if c == 1 else sheet, mode="L" if c == 1 else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), cols


def write_page(path: Path, coords: np.ndarray, labels: np.ndarray, preds: np.ndarray | None, classes: list[str],
               images: torch.Tensor, index: np.ndarray, title: str) -> Path:
    """The interactive map: one HTML file with its script, data and images inside."""
    lo, hi = coords.min(0), coords.max(0)
    unit = (coords - lo) / np.where(hi - lo > 0, hi - lo, 1)  # [0,1] in both axes
    atlas, cols = atlas_png(images)
    data = {"title": title, "classes": classes, "colours": palette(len(classes)),
            "x": np.round(unit[:, 0], 4).tolist(), "y": np.round(unit[:, 1], 4).tolist(),
            "label": labels.tolist(), "pred": preds.tolist() if preds is not None else None,
            "index": index.tolist(), "side": [int(images.shape[-2]), int(images.shape[-1])], "cols": cols}
    data["atlas"] = "data:image/png;base64," + base64.b64encode(atlas).decode()
    # the one escaping path: the title is text, the data JSON inside <script type="application/json">
    page = pages.render("map.html", styles=(pages.asset("map.css"),), scripts=(pages.asset("map.js"),), title=title,
                        data=pages.json_data(data))
    atomic.write_text(path, page)
    return path


def maps_of(run_path: str | Path) -> list[dict]:
    """The maps made of a run (RUN/maps/*/map.json, each checked by RunDir), for the report."""
    return RunDir(run_path).read_maps()
