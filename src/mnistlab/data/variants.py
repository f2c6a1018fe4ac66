"""Dataset variants: the training examples made imbalanced, their labels made noisy, or cut to a few
labels per class, as the long-tail and noisy-label literature makes them on MNIST; seeded, and
recorded with the SHA-256 of what they hold. The test split is never altered.

    ds = mnistlab.load("mnist", imbalance="exp:100", label_noise="sym:0.4", seed=0)
    ds.name                      # 'mnist[imbalance=exp:100,label_noise=sym:0.4,seed=0]': every verb loads it by name
    ds.train.variant.flipped     # positions in ds.train whose label was flipped
    ds.train.variant.record()    # the spec, class counts, the realised noise, SHA-256 of the positions
    mnistlab train --recipe variants --imbalance exp:100 --loss logit_adjusted    # a run draws its own

Imbalance, as LDAM-DRW's imbalanced CIFAR (Cao et al. 2019), with n_max the smallest class's count in
the examples it is drawn from: `exp:RHO` keeps floor(n_max * RHO^(-c/(C-1))) examples of class c
(class 0 the largest, class C-1 n_max / RHO); `step:RHO` keeps n_max of the first half of the classes
and floor(n_max / RHO) of the other half; at least one of each. Which examples: a seeded draw per class.

Few labels (`labels_per_class`): n examples of every class, drawn with the seed (the transfer curve's
labelled subset: `labelled_subset`).

Label noise, drawn last, on the labels of what is kept; a transition matrix T (row: the true class,
column: the given label, each row summing to 1) and one uniform number per example:
`sym:P` (each label flipped with probability P to one of the other classes, uniformly: Co-teaching's
"symmetric"), `pair:P` (class c -> c+1 mod C with probability P: Co-teaching's "pair-flip"),
`trace:T` (a matrix drawn by cleanlab's `generate_noise_matrix_from_trace` with that trace, the
classes' priors and the seed; it needs cleanlab), `matrix:FILE` (a JSON list of C rows of C numbers).
The positions whose label changed are recorded (`Variant.flipped`), so a method can be scored on
finding them (`flip_scores`).

Each step draws from its own seeded stream, so the same seed gives the same positions on every machine
(CPU torch generators: tests/test_variants.py pins the hashes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from .. import schema
from ..errors import MnistlabError
from ..names import did_you_mean
from .files import sha256

IMBALANCE_KINDS = ("exp", "step")
NOISE_KINDS = ("sym", "pair", "trace", "matrix")
VALIDATION = ("balanced", "as-train")  # how a run's validation examples relate to its variant
RECORDED_MATRIX_CLASSES = 20  # the realised noise matrix is recorded whole up to this many classes
MAX_MATRIX_BYTES = 1 << 20
STREAMS = {"imbalance": 1, "noise": 3}  # the seeded streams of the draws (labels_per_class: the seed itself)
VALIDATION_STREAM = 10  # added to each stream for the validation examples of an "as-train" run


def stream_seed(seed: int, stream: int) -> int:
    """A distinct, reproducible generator seed per (seed, stream)."""
    return (seed * 1_000_003 + stream * 104_729 + 12_345) % (2**63 - 1)


def positions_hash(positions: torch.Tensor) -> str:
    """SHA-256 of a list of positions (int64, little-endian): what names an index list in a record."""
    return sha256(torch.as_tensor(positions).to(torch.int64).cpu().numpy().astype("<i8").tobytes())


@dataclass(frozen=True)
class VariantSpec:
    """What a variant does: its imbalance, label noise and labels per class, and the seed of its draws."""

    imbalance: str = ""  # "" | exp:RHO | step:RHO
    label_noise: str = ""  # "" | sym:P | pair:P | trace:T | matrix:FILE
    labels_per_class: int = 0  # 0 = all
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.imbalance or self.label_noise or self.labels_per_class)

    def name(self, base: str) -> str:
        """The dataset's name with the variant: mnist[imbalance=exp:100,label_noise=sym:0.4,seed=0]."""
        if not self.active:
            return base
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if f.name != "seed" and getattr(self, f.name)]
        return f"{base}[{','.join(parts)},seed={self.seed}]"

    def short(self) -> str:
        """A few characters for a run directory's name: exp100-sym0.4."""
        return "-".join(re.sub(r"[^A-Za-z0-9.]+", "", text)[:16] for text in (self.imbalance, self.label_noise) if text)

    def check(self, num_classes: int | None = None) -> VariantSpec:
        """Itself, if every part parses (an error naming the part and the nearest kind otherwise)."""
        if self.imbalance:
            parse_imbalance(self.imbalance)
        if self.label_noise:
            parse_noise(self.label_noise, num_classes)
        if isinstance(self.labels_per_class, bool) or not isinstance(self.labels_per_class, int) \
                or self.labels_per_class < 0:
            raise MnistlabError(f"labels_per_class={self.labels_per_class!r}: expected 0 (all) or a count per class")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise MnistlabError(f"variant seed {self.seed!r}: expected a whole number")
        return self


def _kind_and_value(text: str, kinds: tuple[str, ...], what: str, example: str) -> tuple[str, str]:
    if not isinstance(text, str) or ":" not in text:
        raise MnistlabError(f"{what}={text!r}: expected KIND:VALUE, e.g. {example}",
                            hint=f"the kinds are {', '.join(kinds)}")
    kind, value = text.split(":", 1)
    kind = kind.strip().lower()
    if kind not in kinds:
        starts = [k for k in kinds if kind.startswith(k)]  # symmetric, pairflip: the kind, spelled out
        hint = did_you_mean(kind, kinds) or (f"did you mean {starts[0]!r}? " if starts else "")
        raise MnistlabError(f"{what}={text!r}: unknown kind {kind!r}, expected one of {', '.join(kinds)}",
                            hint=hint + f"e.g. {example}")
    return kind, value.strip()


def parse_imbalance(text: str) -> tuple[str, float]:
    """('exp' | 'step', rho) of `exp:RHO` or `step:RHO`; rho at least 1."""
    kind, value = _kind_and_value(text, IMBALANCE_KINDS, "imbalance", "exp:100 or step:10")
    try:
        rho = float(value)
    except ValueError:
        rho = float("nan")
    if not 1 <= rho <= 1e6:
        raise MnistlabError(f"imbalance={text!r}: the ratio {value!r} is not a number from 1 to 1e6",
                            hint="the ratio of the largest class's count to the smallest's: 10 and 100 are common")
    return kind, rho


def parse_noise(text: str, num_classes: int | None = None) -> tuple[str, float | str]:
    """(kind, value) of a label-noise spec: a probability (sym, pair), a trace, or a file (matrix)."""
    kind, value = _kind_and_value(text, NOISE_KINDS, "label_noise", "sym:0.4, pair:0.45 or trace:8")
    if kind == "matrix":
        if not value:
            raise MnistlabError(f"label_noise={text!r}: expected matrix:FILE (a JSON list of rows)")
        return kind, value
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if kind == "trace":
        upper = num_classes if num_classes is not None else float("inf")
        if not 1 < number < upper:
            raise MnistlabError(f"label_noise={text!r}: a trace between 1 and the number of classes"
                                f"{f' ({num_classes})' if num_classes else ''}, exclusive",
                                hint="the trace is the sum of the matrix's diagonal: 8 of 10 classes is 20% noise "
                                "on average")
        return kind, number
    if not 0 <= number < 1:
        raise MnistlabError(f"label_noise={text!r}: the probability {value!r} is not a number from 0 to below 1")
    return kind, number


# ----------------------------------------------------------------------------------------------
# The draws


def imbalance_counts(counts: torch.Tensor, text: str) -> torch.Tensor:
    """How many examples of each class an imbalance keeps, given each class's count."""
    kind, rho = parse_imbalance(text)
    k = len(counts)
    n_max = int(counts.min())
    if n_max < 1:
        empty = int(torch.nonzero(counts == 0).flatten()[0])
        raise MnistlabError(f"imbalance={text!r}: class {empty} has no examples to draw from",
                            hint="use more training examples (train_subset=0)")
    if kind == "exp":
        wanted = [n_max * rho ** (-c / (k - 1)) for c in range(k)]
    else:  # step: the last half of the classes are the minority
        minority = k // 2
        wanted = [n_max if c < k - minority else n_max / rho for c in range(k)]
    return torch.tensor([max(1, int(w + 1e-9)) for w in wanted], dtype=torch.long)


def _per_class_draw(labels: torch.Tensor, take: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Sorted positions: take[c] examples of each class c, drawn from `gen` (classes in order)."""
    parts = []
    for c in range(len(take)):
        members = torch.nonzero(labels == c).flatten()
        parts.append(members[torch.randperm(len(members), generator=gen)[: int(take[c])]])
    return torch.sort(torch.cat(parts)).values


def labelled_subset(labels: torch.Tensor, per_class: int, seed: int, num_classes: int, where: str) -> torch.Tensor:
    """Sorted positions of `per_class` examples of every class, drawn with `seed` (stratified by design)."""
    gen = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    parts = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < per_class:
            raise MnistlabError(f"labels_per_class={per_class}: class {c} has only {len(members)} examples in {where}",
                                hint=f"choose at most {len(members)}")
        parts.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.sort(torch.cat(parts)).values


def subset_record(indices: torch.Tensor, per_class: int, seed: int) -> dict:
    """What a run records about its labelled examples: enough to check that two runs drew the same."""
    return {"per_class": per_class, "count": len(indices), "seed": seed, "sha256": positions_hash(indices)}


def noise_matrix(text: str, num_classes: int, prior: torch.Tensor, seed: int) -> torch.Tensor:
    """The transition matrix (float64, row = true class, column = given label) a noise spec names."""
    kind, value = parse_noise(text, num_classes)
    k = num_classes
    if kind == "sym":
        t = torch.full((k, k), value / (k - 1), dtype=torch.float64)
        t.fill_diagonal_(1 - value)
    elif kind == "pair":
        t = torch.eye(k, dtype=torch.float64) * (1 - value)
        t[torch.arange(k), (torch.arange(k) + 1) % k] += value
    elif kind == "trace":
        t = _cleanlab_matrix(k, value, prior, seed)
    else:
        t = read_matrix(value, k)
    return t


def _cleanlab_matrix(k: int, trace: float, prior: torch.Tensor, seed: int) -> torch.Tensor:
    try:
        from cleanlab.benchmarking.noise_generation import (
            generate_noise_matrix_from_trace,
        )
    except ImportError:
        raise MnistlabError("label_noise=trace:... draws its matrix with cleanlab",
                            hint="pip install 'mnistlab[audit]', or give the matrix: matrix:FILE") from None
    saved = np.random.get_state()  # cleanlab seeds numpy's global generator: leave it as it was
    try:
        py = (prior / prior.sum()).double().numpy()
        m = generate_noise_matrix_from_trace(k, trace, py=py, valid_noise_matrix=True, seed=seed % (2**32))
    finally:
        np.random.set_state(saved)
    if m is None:
        raise MnistlabError(f"label_noise=trace:{trace:g}: cleanlab found no valid noise matrix with that trace",
                            hint="choose a larger trace (less noise)")
    return torch.from_numpy(np.asarray(m, dtype=np.float64)).T.contiguous()  # cleanlab's: P(given | true) by column


MATRIX_SPEC = schema.listof(schema.listof(schema.number(0, 1), 1000), 1000)


def read_matrix(path: str, k: int) -> torch.Tensor:
    """A noise matrix from a JSON file: k rows (true classes) of k probabilities (given labels), each row
    summing to 1."""
    rows = schema.read_json(path, MATRIX_SPEC, hint="a JSON list of rows, e.g. [[0.8, 0.2], [0.1, 0.9]]",
                            max_bytes=MAX_MATRIX_BYTES)
    if len(rows) != k or any(len(r) != k for r in rows):
        raise MnistlabError(f"{path}: a noise matrix of {len(rows)} rows, expected {k} rows of {k} numbers "
                            f"(one row per true class)")
    t = torch.tensor(rows, dtype=torch.float64)
    bad = torch.nonzero((t.sum(1) - 1).abs() > 1e-6).flatten()
    if len(bad):
        raise MnistlabError(f"{path}: row {int(bad[0])} sums to {float(t[bad[0]].sum()):.6g}, expected 1",
                            hint="row c holds the probabilities of each given label for true class c")
    return t


def noisy_labels(labels: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A given label per example, drawn from its true class's row of `t` with one uniform number each."""
    u = torch.rand(len(labels), generator=gen, dtype=torch.float64)
    cumulative = t.cumsum(1)[labels]
    return (u[:, None] >= cumulative).sum(1).clamp_max(t.shape[0] - 1)


@dataclass
class Variant:
    """The examples a variant keeps of a split, with their given and true labels and what was flipped.

    Positions are in the split the variant was drawn from (`positions`: in the original training
    split, where that differs, as a run's are: less the validation holdout and train_subset)."""

    spec: VariantSpec
    indices: torch.Tensor  # sorted positions kept, in the examples it was drawn from
    labels: torch.Tensor  # the given labels of the kept examples (after the noise)
    true_labels: torch.Tensor  # their labels before the noise
    matrix: torch.Tensor | None  # the noise's transition matrix (row: true, column: given)
    num_classes: int
    where: str  # what it was drawn from, in words
    positions: torch.Tensor | None = None  # the kept examples' positions in the original split (default: indices)

    @property
    def absolute(self) -> torch.Tensor:
        return self.positions if self.positions is not None else self.indices

    @property
    def flipped(self) -> torch.Tensor:
        """Positions, among the kept examples (0..count-1), whose given label is not the true one."""
        return torch.nonzero(self.labels != self.true_labels).flatten()

    @property
    def sha256(self) -> str:
        return positions_hash(self.absolute)

    def record(self) -> dict:
        """What a run (and a result) records: the spec, counts, the realised noise and the hashes."""
        k = self.num_classes
        flipped = self.flipped
        out = {"imbalance": self.spec.imbalance, "label_noise": self.spec.label_noise,
               "labels_per_class": self.spec.labels_per_class, "seed": self.spec.seed, "drawn_from": self.where,
               "count": len(self.indices),
               "class_counts": torch.bincount(self.labels, minlength=k).tolist(),
               "true_class_counts": torch.bincount(self.true_labels, minlength=k).tolist(),
               "flipped": len(flipped), "flip_rate": len(flipped) / max(1, len(self.indices)),
               "sha256": self.sha256, "labels_sha256": positions_hash(self.labels),
               "flipped_sha256": positions_hash(self.absolute[flipped])}
        if self.matrix is not None and k <= RECORDED_MATRIX_CLASSES:
            out["noise_matrix"] = [[round(v, 6) for v in row] for row in self.matrix.tolist()]
            realised = torch.bincount(self.true_labels * k + self.labels, minlength=k * k).reshape(k, k)
            out["realised_transitions"] = realised.tolist()  # counts: row true class, column given label
        return out


def draw(labels: torch.Tensor, num_classes: int, spec: VariantSpec, *, where: str,
         stream_offset: int = 0) -> Variant:
    """The variant `spec` of examples with these (true) labels: imbalance, then labels per class, then
    noise, each from its own seeded stream (`stream_offset` moves them all: a validation split's)."""
    spec.check(num_classes)
    labels = labels.cpu().long()
    keep = torch.arange(len(labels))
    if spec.imbalance:
        counts = torch.bincount(labels, minlength=num_classes)
        gen = torch.Generator().manual_seed(stream_seed(spec.seed, STREAMS["imbalance"] + stream_offset))
        keep = _per_class_draw(labels, imbalance_counts(counts, spec.imbalance), gen)
    if spec.labels_per_class:  # drawn with the seed itself, as the transfer curve's labelled subsets always were
        keep = keep[labelled_subset(labels[keep], spec.labels_per_class, spec.seed, num_classes, where)]
    true = labels[keep]
    given, matrix = true, None
    if spec.label_noise:
        prior = torch.bincount(true, minlength=num_classes).double()
        matrix = noise_matrix(spec.label_noise, num_classes, prior, spec.seed)
        gen = torch.Generator().manual_seed(stream_seed(spec.seed, STREAMS["noise"] + stream_offset))
        given = noisy_labels(true, matrix, gen)
    return Variant(spec, keep, given, true, matrix, num_classes, where)


def flip_scores(flagged, flipped, n: int, ranking=None) -> dict:
    """How well a set of flagged positions (and a ranking of all positions, worst label first) finds the
    planted flips: precision and recall of the flagged set; precision of the ranking's first k, with k
    the number of flips (where precision = recall); average precision of the ranking."""
    flagged = np.unique(np.asarray(flagged, dtype=np.int64))
    planted = np.zeros(n, dtype=bool)
    planted[np.asarray(flipped, dtype=np.int64)] = True
    k = int(planted.sum())
    hits = int(planted[flagged].sum()) if len(flagged) else 0
    out = {"planted": k, "flagged": int(len(flagged)), "found": hits,
           "precision": hits / len(flagged) if len(flagged) else None, "recall": hits / k if k else None}
    if ranking is not None and k:
        order = np.asarray(ranking, dtype=np.int64)
        relevant = planted[order]
        cum = np.cumsum(relevant)
        out["ranking_precision_at_planted"] = float(cum[k - 1] / k)
        out["ranking_average_precision"] = float((cum[relevant] / (np.flatnonzero(relevant) + 1)).sum() / k)
    return out


def with_positions(variant: Variant, positions: torch.Tensor) -> Variant:
    """The variant with its kept examples' positions in the original split (`positions` maps the
    examples it was drawn from to the original)."""
    return replace(variant, positions=positions.cpu()[variant.indices])


# ----------------------------------------------------------------------------------------------
# The name form: mnist[imbalance=exp:100,label_noise=sym:0.4,seed=0]

NAME = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<parts>[^\[\]]*)\]$")
KEYS = tuple(f.name for f in fields(VariantSpec))


def split_name(name: str) -> tuple[str, VariantSpec | None]:
    """(the base dataset's name, the variant) of a name; (name, None) for a name without brackets."""
    match = NAME.match(str(name))
    if not match:
        return name, None
    values: dict = {}
    for part in filter(None, (p.strip() for p in match["parts"].split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if key == "noise":  # the short form people write
            key = "label_noise"
        if not sep or key not in KEYS:
            raise MnistlabError(f"dataset {name!r}: {part!r} is not one of {', '.join(k + '=...' for k in KEYS)}",
                                hint=did_you_mean(key, KEYS) + "e.g. mnist[imbalance=exp:100,label_noise=sym:0.4]")
        if key in ("labels_per_class", "seed"):
            try:
                values[key] = int(value)
            except ValueError:
                raise MnistlabError(f"dataset {name!r}: {key}={value!r} is not a whole number") from None
        else:
            values[key] = value.strip()
    return match["base"].strip(), VariantSpec(**values).check()
