"""What the Python API's verbs return: small result objects with the figures as attributes, the
files written, and a notebook display (`_repr_html_`: the headline figures and the main picture).

    run = mnistlab.train(recipe="seed-cnn", epochs=3)
    run.test_acc, run.run_dir, run["summary key"]        # attributes, or the record as a mapping
    run                                                  # in a notebook: the figures and learning curves

Every result keeps the record its verb wrote (`.record`, also readable as a mapping, as the dicts the
verbs returned before), so code that indexed those keeps working.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from . import pages
from .analysis.attack_reports import attack_table
from .analysis.checks import finding_line
from .analysis.data_audit import format_summary
from .analysis.distribution_shift import sweep_rows, table_rows
from .analysis.plots import training_curves
from .analysis.robust import format_robust
from .models.summary import summary_of
from .result_base import Result
from .rundir import RunDir
from .stats import mean_pm_std
from .tables import format_table, printable


def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _curves_png(log: list[dict]) -> str | None:
    """Learning curves drawn from a run's log into a temporary PNG (for a notebook display)."""
    if not log:
        return None
    out = Path(tempfile.mkdtemp(prefix="mnistlab-")) / "curves.png"
    return str(training_curves(log, out))


class Run(Result):
    """A finished training run: its summary, its directory, and its learning curves."""

    title = "run"

    @property
    def run_dir(self) -> Path:
        return Path(self.record["run_dir"])

    def __fspath__(self) -> str:  # a Run goes wherever a run directory goes: mnistlab.evaluate(run)
        return str(self.run_dir)

    @property
    def accuracy(self) -> float | None:
        """Test accuracy of the kept weights, as `evaluate` reproduces it."""
        return self.record.get("test_acc")

    @property
    def history(self) -> dict[str, list]:
        """Per-epoch figures as Keras' `History.history` holds them: loss, accuracy, val_loss,
        val_accuracy, lr (one value per epoch; None where an epoch has none)."""
        rows = RunDir(self.run_dir).epochs()
        keys = {"epoch": "epoch", "loss": "train_loss", "accuracy": "train_acc", "val_loss": "val_loss",
                "val_accuracy": "val_acc", "lr": "lr"}
        return {name: [r.get(key) for r in rows] for name, key in keys.items()}

    @property
    def errors(self) -> int | None:
        return self.record.get("test_errors")

    def summary(self) -> ModelSummary:
        """The trained model's layers, output shapes, parameters and multiply-adds per image."""
        return ModelSummary(summary_of(self.run_dir))

    def headline(self):
        r = self.record
        out = [("run", str(self.run_dir)), ("model", r.get("model")), ("dataset", r.get("dataset")),
               ("seed", r.get("seed")), ("test accuracy", _pct(r.get("test_acc"))),
               ("test balanced accuracy", _pct(r.get("test_balanced_acc")) if r.get("test_balanced_acc") is not None
                else None),
               ("test errors", r.get("test_errors")), ("best validation accuracy", _pct(r.get("val_acc"))),
               ("epochs", r.get("epochs_run")), ("training seconds", f"{r.get('train_s') or 0:.1f}")]
        return [(k, v) for k, v in out if v is not None]

    def pictures(self):
        curves = RunDir(self.run_dir).eval_dir / "curves.png"
        if curves.is_file():
            return {"learning curves": str(curves)}
        path = _curves_png(RunDir(self.run_dir).epochs())
        return {"learning curves": path} if path else {}


class Runs(Result):
    """Several seeds of one configuration: each run, and mean +- std over them."""

    title = "runs over seeds"

    def __init__(self, record: dict, runs: list[Run]):
        super().__init__(record)
        self.runs = runs

    def __fspath__(self) -> str:  # the group's directory: what ensemble and report take
        return str(self.record["group_dir"])

    @property
    def accuracy(self) -> float | None:
        """Mean test accuracy over the seeds (`.record["test_acc"]` has std, min, max)."""
        return (self.record.get("test_acc") or {}).get("mean")

    def headline(self):
        r = self.record
        return [("runs", str(r["group_dir"])), ("seeds", ", ".join(map(str, r["seeds"]))),
                ("test accuracy (%)", mean_pm_std(r.get("test_acc"), scale=100)),
                ("validation accuracy (%)", mean_pm_std(r.get("val_acc"), scale=100))]

    def pictures(self):
        return self.runs[0].pictures() if self.runs else {}


class ModelSummary(Result):
    """A model's layers, output shapes, parameters and multiply-adds per image (`mnistlab models --summary`)."""

    title = "model summary"

    def headline(self):
        r = self.record
        return [("model", f"{r['source']} ({r['kind']})"), ("input", str(r["input_shape"])),
                ("parameters", f"{r['params']:,} ({r['bytes'] / 2**20:.2f} MiB; {r['trainable']:,} trainable)"),
                ("per image", f"{r['macs']:,} multiply-adds ({r['flops'] / 1e6:.2f} MFLOPs)")]

    def __str__(self) -> str:
        rows = [[layer["name"], layer["type"], str(layer["output_shape"]), f"{layer['params']:,}",
                 f"{layer['macs']:,}"] for layer in self.record["layers"]]
        table = format_table(rows, ["layer", "type", "output shape", "params", "mult-adds"])
        return printable(table) + "\n\n" + "\n".join(printable(f"{k}: {v}") for k, v in self.headline())

    def _repr_html_(self) -> str:
        header = ["layer", "type", "output shape", "params", "mult-adds"]
        body = [[layer["name"], layer["type"], str(layer["output_shape"]), f"{layer['params']:,}", f"{layer['macs']:,}"]
                for layer in self.record["layers"]]
        body += [[k, v, "", "", ""] for k, v in self.headline()]
        return pages.fragment("result.html", title=self.title, header=header, body=body)


class LrFind(Result):
    """`lr-find`: each rule's suggested learning rate over the seeds, the recommendation, the plot."""

    title = "learning-rate finder"

    @property
    def lr(self) -> float | None:
        """The recommended learning rate (two significant figures: what `train --lr` takes); None if none."""
        return self.record["recommended"]["lr"]

    def headline(self):
        r = self.record
        rec = r["recommended"]
        rows = [("model", r["recipe"] or r["model"]), ("optimizer", f"{r['optimizer']}, batch {r['batch_size']}")]
        for rule, found in r["rules"].items():
            rows.append((rule, "none" if not found else f"{found['median']:.3g}" + (
                f" (seeds: {found['min']:.3g} to {found['max']:.3g}, {found['spread']:.1f}x)" if found["seeds"] > 1 else "")))
        rows.append(("recommended", f"{rec['lr']:g} ({rec['rule']}; {rec['ratio_to_given']:.2g}x the settings' "
                                    f"{r['given_lr']:g})" if rec["lr"] else f"none: {r['no_suggestion']}"))
        return rows

    def __str__(self) -> str:
        r = self.record
        rows = [[s["seed"], s["steps"], *(f"{s['suggestions'][k]:.3g}" if s["suggestions"][k] else "-"
                                          for k in r["rules"]), s["stopped"]] for s in r["seeds"]]
        lines = [format_table(rows, ["seed", "steps", *r["rules"], "stopped"]), ""]
        lines += [f"{k}: {v}" for k, v in self.headline()]
        if r["recommended"]["command"]:
            lines += ["", f"train with it: {r['recommended']['command']}"]
        lines.append(f"wrote {r['files']['png']} and {r['files']['json']}")
        return "\n".join(lines)

    def pictures(self):
        return {"loss against learning rate": self.record["files"]["png"]}


class Labelled(np.ndarray):
    """An array whose rows and columns are named (a confusion matrix: true class x predicted class): it
    computes as any array and prints with its class names."""

    def __new__(cls, values, names: list[str]):
        out = np.asarray(values).view(cls)
        out.names = list(names)
        return out

    def __array_finalize__(self, obj):
        self.names = getattr(obj, "names", None)

    def __str__(self) -> str:
        if self.ndim != 2 or self.names is None or self.shape != (len(self.names),) * 2:
            return np.asarray(self).__str__()
        return format_table([[n, *row] for n, row in zip(self.names, self.tolist())], ["true \\ read as", *self.names])

    def _repr_html_(self) -> str:
        return pages.fragment("result.html", title="confusion matrix", header=["true \\ read as", *self.names],
                              body=[[n, *row] for n, row in zip(self.names, self.tolist())])


class Evaluation(Result):
    """Every number `evaluate` gives: accuracy, errors, per-class table, confusion matrix, calibration;
    `print(ev)` shows them as `mnistlab evaluate` does."""

    title = "evaluation"

    @property
    def classes(self) -> list[str]:
        return [c["class"] for c in self.record["per_class"]]

    @property
    def confusion_matrix(self) -> Labelled:
        """(true class, predicted class) counts, labelled with the class names."""
        return Labelled(self.record["confusion_matrix"], self.classes)

    def __str__(self) -> str:
        r = self.record
        lines = [f"{r['source']} on {r['dataset']} {r['split']}{' (TTA)' if r['tta'] else ''}: {r['n']} images"]
        topk = ", ".join(f"top-{k[3:]} {r[k]:.2%}" for k in r if k.startswith("top") and k != "top1")
        lines.append(f"accuracy {r['accuracy']:.2%} ({r['errors']} errors), {topk}")
        if "balanced_accuracy" in r:
            lines.append(f"balanced accuracy {r['balanced_accuracy']:.2%} (the mean recall over classes), "
                         f"macro-F1 {r['macro_f1']:.4f}")
        v = r.get("variant")
        if v:
            spec = ", ".join(f"{k} {v[k]}" for k in ("imbalance", "label_noise", "labels_per_class") if v.get(k))
            lines.append(f"trained on a variant ({spec}; seed {v['seed']}): {v['count']:,} examples, class counts "
                         f"{v['class_counts']}")
        reported = r.get("run_reported")
        if reported:
            lines.append(f"the same {reported['errors']} errors `train` reported" if reported["same"] else
                         f"NOTE: `train` reported {reported['errors']} errors; measured here under other settings "
                         f"({r['evaluation']}) than the run's ({reported['run_evaluation']})")
        lines.append(f"cross-entropy {r['cross_entropy']:.4f}, ECE {r['ece']:.4f}")
        if r.get("not_digit"):
            nd = r["not_digit"]
            lines.append(f"not a digit: {nd['flagged']:.2%} of {nd['images']} images flagged (the score is calibrated "
                         "to flag 1% of validation digits)")
        if "member_accuracy" in r:
            lines.append(f"members ({r['method']}): " + ", ".join(f"{a:.2%}" for a in r["member_accuracy"]))
        if r.get("robust"):
            lines += ["robust accuracy:", *("  " + line for line in format_robust(r["robust"]))]
        rows = [[c["class"], c["precision"], c["recall"], c["f1"], c["support"]] for c in r["per_class"]]
        rows += [[avg, r[f"{avg}_avg"]["precision"], r[f"{avg}_avg"]["recall"], r[f"{avg}_avg"]["f1"], r["n"]]
                 for avg in ("macro", "weighted")]
        lines += ["", format_table([[name, *(f"{v:.4f}" for v in vals), n] for name, *vals, n in rows],
                                   ["class", "precision", "recall", "f1", "support"])]
        if len(self.classes) <= 20:  # a wider one is a picture (eval/<split>-confusion.png), not a screenful
            lines += ["", "confusion matrix (rows: the true class; columns: what the model read):",
                      str(self.confusion_matrix)]
        if r["most_confused"]:
            lines += ["", "most confused: " + "; ".join(f"{m['true']} read as {m['predicted']}: {m['count']} times"
                                                        for m in r["most_confused"][:5])]
        if r.get("mistakes"):
            lines.append("most confident mistakes (index in the split: true -> read as, probability): " + "; ".join(
                f"#{m['index']}: {m['true']} -> {m['predicted']} ({m['probability']:.0%})" for m in r["mistakes"][:8]))
        written = r.get("json")
        if written:
            pictures = r.get("pictures") or {}
            lines += ["", f"wrote {written}" + (f" and {len(pictures)} pictures beside it (the mistakes: "
                                                f"{pictures['mistakes']})" if pictures.get("mistakes") else "")]
        return "\n".join(lines)

    @property
    def per_class_table(self):
        """The per-class precision, recall, F1 and support as a pandas DataFrame (pandas needed)."""
        import pandas as pd

        return pd.DataFrame(self.record["per_class"]).set_index("class")

    def headline(self):
        r = self.record
        return [("model", r["source"]), ("split", f"{r['dataset']} {r['split']} ({r['n']} images)"),
                ("accuracy", _pct(r["accuracy"])), ("errors", r["errors"]),
                ("balanced accuracy", _pct(r.get("balanced_accuracy"))),
                ("macro F1", f"{r['macro_avg']['f1']:.4f}"), ("ECE", f"{r['ece']:.4f}")]

    def pictures(self):
        pics = self.record.get("pictures") or {}
        order = [("confusion matrix", "confusion"), ("mistakes", "mistakes"), ("per class", "per_class"),
                 ("recall against training examples", "recall_vs_count"), ("learning curves", "curves")]
        return {caption: pics[key] for caption, key in order if key in pics}


class AttackReport(Result):
    """`attack` on a split of one or several models: robust accuracy per epsilon, the checks, pictures."""

    title = "attack"

    def __init__(self, record: dict, docs: list[dict]):
        super().__init__(record)
        self.docs = docs

    @property
    def accuracy(self) -> list[float]:
        return self.docs[0]["robust_accuracy"]

    def headline(self):
        out = []
        for d in self.docs:
            figures = ", ".join(f"eps {e:g}: {100 * a:.1f}%" for e, a in zip(d["eps"], d["robust_accuracy"]))
            checks = d.get("masking_checks")
            verdict = "" if checks is None else ("; checks passed" if checks["passed"] else "; checks FAILED")
            out.append((str(d["source"]), f"clean {100 * d['clean_accuracy']:.1f}%, {figures}{verdict}"))
        return out

    def __str__(self) -> str:
        """What `mnistlab attack` prints: per model, robust accuracy per epsilon, the checks, the files."""
        parts = [f"{d['source']}:\n{attack_table(d)}\n\nwrote {d['json']}, {d['pictures']['curve']} and "
                 f"{d['pictures']['gallery']}" for d in self.docs]
        if self.record.get("compare"):
            parts.append(f"wrote {self.record['compare']}")
        return "\n\n".join(parts)

    def pictures(self):
        if self.record.get("compare"):
            return {"robust accuracy against epsilon": self.record["compare"]}
        p = self.docs[0]["pictures"]
        return {"robust accuracy against epsilon": p["curve"], "gallery": p["gallery"]}


class Shift(Result):
    """`shift`: accuracy on every set beyond MNIST's test set (corruptions, variants, sweeps, other styles),
    the drop from clean, the corruptions' mean and worst, and the pictures; `.accuracy` by set name."""

    title = "shift"

    @property
    def accuracy(self) -> dict[str, float]:
        return {r["name"]: r["accuracy"] for r in self.record["sets"]}

    def headline(self):
        r = self.record
        out = [("model", r["source"]), ("sets from", f"{r['base']} ({r['split']})"), ("clean", _pct(r["clean"]))]
        if "corruption_mean" in r:
            out += [(f"MNIST-C-style mean ({r['corruptions_measured']})", _pct(r["corruption_mean"])),
                    ("worst corruption", f"{r['corruption_worst_name']} {_pct(r['corruption_worst'])}")]
        goals = r.get("goals") or []
        if goals:
            out.append(("goals of the packaged model met", f"{sum(g['met'] for g in goals)} of {len(goals)}"))
        return out

    def __str__(self) -> str:
        """What `mnistlab shift` prints: a row per set, the sweeps, what preprocessing is worth, the goals."""
        r = self.record
        lines = [f"{r['source']} on sets built from {r['base']} ({r['split']})", "",
                 format_table(table_rows(r), ["set", "group", "images", "accuracy", "vs clean (points)"])]
        if "corruption_mean" in r:
            lines.append(f"\nMNIST-C-style corruptions: mean {_pct(r['corruption_mean'])} over "
                         f"{r['corruptions_measured']}, worst {r['corruption_worst_name']} {_pct(r['corruption_worst'])}")
        if r["sweeps"]:
            lines += ["", "sweeps (accuracy at each point):", *(f"  {name}: {text}" for name, text in sweep_rows(r))]
        if r.get("preprocessing"):
            lines.append("\nMNIST-form preprocessing is worth: " + "; ".join(
                f"{k} {100 * v:+.2f} points" for k, v in r["preprocessing"].items()))
        if r.get("goals"):
            goals = r["goals"]
            lines += ["", f"issue 46's goals for the packaged model, {sum(g['met'] for g in goals)} of {len(goals)} met:",
                      format_table([[g["name"], _pct(g["value"]), f">= {100 * g['goal']:.1f}%",
                                     "met" if g["met"] else "NOT met"] for g in goals],
                                   ["goal", "measured", "at least", "verdict"])]
        if r.get("skipped"):  # a style and its -raw twin are skipped for one reason: said once
            why = {}
            for s in r["skipped"]:
                why.setdefault(s["why"], []).append(s["name"])
            lines.append("\nnot measured: " + "; ".join(f"{', '.join(names)} ({reason})" for reason, names in why.items()))
        secs = r.get("seconds") or {}
        lines.append(f"\n{secs.get('total', 0):.1f} s ({secs.get('build', 0):.1f} s making or reading the sets, "
                     f"{secs.get('measure', 0):.1f} s measuring)")
        if r.get("json"):
            lines.append(f"wrote {r['json']}" + (f", {r['page']} and the pictures beside them" if r.get("page") else ""))
        return "\n".join(lines)

    def pictures(self):
        p = self.record.get("pictures") or {}
        return {caption: p[key] for caption, key in (("accuracy along each sweep", "curves"),
                                                     ("what each set looks like", "examples")) if p.get(key)}


class Audit(Result):
    """A label audit: the ranked issues table (`.table`, pandas), counts, and the gallery."""

    title = "label audit"

    def __str__(self) -> str:
        r = self.record
        return (format_summary(r) + f"\n\nwrote {r['out']}/issues.csv, issues.json, summary.json"
                + (f" and {Path(r['gallery']).name}" if r.get("gallery") else ""))

    def __init__(self, record: dict, table=None):
        super().__init__(record)
        self.table = table

    def headline(self):
        r = self.record
        out = [("dataset", f"{r['dataset']} {r['split']} ({r['n']} images)"),
               ("out-of-fold accuracy", _pct(r.get("oof_accuracy"))),
               ("issues", ", ".join(f"{k} {v}" for k, v in (r.get("issues") or {}).items()) or "none")]
        p = r.get("planted_flips")
        if p:
            out.append(("planted flips found", f"recall {_pct(p['recall'])}, precision {_pct(p['precision'])} "
                        f"({p['found']:,} of {p['planted']:,} flips among {p['flagged']:,} flagged)"))
        return out

    def pictures(self):
        return {"top label issues": self.record["gallery"]} if self.record.get("gallery") else {}


class Check(Result):
    """`mnistlab check`: the verdict on a model, optimizer or loss, the checks behind it, and the
    learning arms (`.findings`, `.yours`, `.references`)."""

    title = "check"

    def headline(self):
        r = self.record
        rows = [("verdict", r["verdict"])]
        rows += [(f["name"], ("skipped: " if f.get("skipped") else "ok: " if f["ok"] else "FAIL: " if f["ok"] is False
                              else "") + f["detail"]) for f in r["findings"]]
        for arm in ([r["yours"], *r["references"]] if r.get("yours") else []):
            rows.append((arm["name"], mean_pm_std(stats_of(arm), 2, 100, "%") + f" (lr {arm.get('lr', 0):g})"))
        return rows

    def __str__(self) -> str:
        """What `mnistlab check` prints: the settings, every check, the learning arms and the verdict."""
        r = self.record
        settings = (r.get("settings") or {}).get("text", "")
        lines = [f"check of {r['model']} (optimizer {r['optimizer']}, loss {r['loss']}) on {r['dataset']}; {settings}",
                 *(finding_line(f) for f in r["findings"])]
        return "\n".join([*lines, self.conclusion()])

    def conclusion(self) -> str:
        """The learning arms (each at the learning rate chosen for it) and the verdict."""
        r = self.record
        lines = []
        if r["yours"]:
            b = r["budget"]
            lines.append(f"learning ({b['epochs']} epoch{'s' if b['epochs'] != 1 else ''} of {b['train_images']:,} training images, validation accuracy "
                         f"on {b['validation']:,} held-out images, seeds {r['seeds']}):")
            for arm in [r["yours"], *r["references"]]:
                lines.append(f"  {arm['name']:<34} {arm['mean']:.2%} +- {arm['std']:.2%}  at lr {arm.get('lr', 0):g}"
                             + (f"  diverged: seeds {arm['diverged']}" if arm["diverged"] else ""))
        lines.append(f"verdict: {r['verdict']}")
        if r.get("out"):
            lines.append(f"wrote {r['out']}/check.json, check.html and its pictures")
        return "\n".join(lines)

    def pictures(self):
        files = self.record.get("pictures") or {}
        return {caption: files[key] for key, caption in (("curves", "learning curves against the references"),
                                                         ("confusion", "confusion matrix (validation)"),
                                                         ("mistakes", "mistakes (validation)")) if key in files}

    def __repr__(self) -> str:
        return f"Check({self.record['verdict']})"


def stats_of(arm: dict) -> dict | None:
    accs = [r["val_acc"] for r in arm["runs"] if "val_acc" in r]
    return {"mean": arm["mean"], "std": arm["std"], "n": len(accs)} if accs else None


class Map(Result):
    """A 2-D map of a split: coordinates, the 5-NN separation, the picture and the interactive page."""

    title = "map"

    @property
    def coords(self) -> np.ndarray:
        return np.load(self.record["files"]["npy"])

    def headline(self):
        r = self.record
        return [("what", f"{r['method']} of {r['features']} ({r['n']:,} {r['split']} images, seed {r['seed']})"),
                ("5-NN accuracy on the map", _pct(r.get("separation_5nn"))),
                ("interactive page", r["files"]["html"])]

    def pictures(self):
        return {"map": self.record["files"]["png"]}


class Inspection(Result):
    """What a network learned: filters, feature maps, top images per unit, saliency."""

    title = "inspect"

    def __str__(self) -> str:
        return "\n".join(f"{name}: {path}" for name, path in self.record["pictures"].items())

    def headline(self):
        r = self.record
        return [("model", r["model"]), ("first layer", r["first_layer"]), ("units shown", len(r["units"]))]

    def pictures(self):
        p = self.record["pictures"]
        order = [("first-layer filters", "filters"), ("saliency", "saliency"), ("top images per unit", "top-units")]
        return {caption: p[key] for caption, key in order if key in p}


class Study(Result):
    """A hyperparameter search: the chosen trial, its test accuracy (read once), the recipe, the page."""

    title = "study"

    def headline(self):
        r = self.record
        test = r.get("test") or {}
        return [("study", r["study"]), ("trials", ", ".join(f"{k} {v}" for k, v in r["trials"].items() if v)),
                ("chosen", f"trial {r['chosen']['number']}: validation {_pct(r['chosen']['val_acc'])}"),
                ("test accuracy (once)", _pct(test.get("accuracy"))), ("recipe", r["best_recipe"])]

    def pictures(self):
        out = Path(self.record["best_recipe"]).parent
        pics = {"optimisation history": out / "study-history.png", "Pareto front": out / "study-pareto.png"}
        return {k: str(v) for k, v in pics.items() if v.is_file()}


class Curve(Result):
    """A transfer curve: test accuracy against labels per class, three ways."""

    title = "transfer curve"

    def headline(self):
        r = self.record
        return [(f"{e['labels_per_class']} per class", ", ".join(
            f"{m} {100 * e[m]['mean']:.2f} ± {100 * e[m]['std']:.2f}" for m in r["modes"])) for e in r["table"]]

    def pictures(self):
        return {"test accuracy against labels per class": self.record["picture"]}


class SotaStudy(Result):
    """An et al.'s study: one row per protocol and model or ensemble."""

    title = "state-of-the-art study"

    def headline(self):
        return [(str(r.get("name")), _pct(r.get("test_acc_mean", r.get("test_acc")))) for r in self.record["rows"]]


class Report(Result):
    """The report's files."""

    title = "report"

    def __str__(self) -> str:
        return f"wrote {self.record['html']} and {self.record['markdown']}"

    def headline(self):
        return [("page", self.record["html"]), ("markdown", self.record["markdown"])]


class Saved(Result):
    """A file a verb wrote (an ONNX export), and what it holds."""

    title = "saved"

    def headline(self):
        return [(k, v) for k, v in self.record.items() if isinstance(v, (str, int, float))]

    def __str__(self) -> str:
        return f"wrote {self.record['file']}"


class Ensemble(Result):
    """An ensemble saved as one file: its members (chosen on validation where asked), each beside it."""

    title = "ensemble"

    def headline(self):
        e = self.record["evaluation"]
        return [("saved", self.record["saved"]), ("method", self.record["method"]),
                ("members", len(self.record["members"])), (f"{e['split']} accuracy", _pct(e["accuracy"]))]

    def __str__(self) -> str:
        r, e = self.record, self.record["evaluation"]
        lines = []
        if r["selection"]:
            lines.append("greedy selection on the validation split:")
            lines += [f"  + {path}  (val accuracy {acc:.2%})" for path, acc in r["selection"]]
        lines += [f"wrote {r['saved']} ({len(r['members'])} members, method {r['method']})", ""]
        rows = [[str(p), f"{a:.2%}", str(round((1 - a) * e["n"]))] for p, a in zip(r["members"], r["member_accuracy"])]
        rows.append([f"ensemble ({r['method']})", f"{e['accuracy']:.2%}", str(e["errors"])])
        return "\n".join(lines) + format_table(rows, ["model", f"{e['split']} accuracy", "errors"])


class Trusted(Result):
    """The user code a run carries, and whether this user approved it (`mnistlab trust`)."""

    title = "trust"

    def headline(self):
        return [(f"{c['role']} {c['ref']}", ("approved" if c["signed"] else "not approved") + f", read it in {c['read']}")
                for c in self.record["code"]] or [("code", "none: this run uses only mnistlab's own models")]

    def __str__(self) -> str:  # names and paths come from a run someone sent: nothing a terminal acts on
        return "\n".join(printable(f"{k}: {v}") for k, v in self.headline())


class RecipeText(Result):
    """A recipe's TOML, as printed by `mnistlab recipes --show NAME` (to copy and edit)."""

    title = "recipe"

    def __str__(self) -> str:  # printed, it is the file: `mnistlab recipes --show NAME > my.toml`
        return self.record["toml"].rstrip("\n")

    def _repr_html_(self) -> str:
        return pages.fragment("result.html", title=f"recipe {self.record['name']}", text=self.record["toml"])
