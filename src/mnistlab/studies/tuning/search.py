"""Hyperparameter search on Optuna: every trial an ordinary run, the test set read once at the end.

    mnistlab tune --recipe fast --space fast --trials 50 --workers 2
    mnistlab tune --recipe fast --space fast-pareto --objectives accuracy,time --trials 40

A study lives in a storage Optuna shares between processes (SQLite in the study directory by
default; any RDB URL, so workers on several machines join one study) and in a directory:

    runs/tune/<study>/
      study.db           Optuna's storage (unless --storage names another)
      trials/trial-0007/ each trial is a run directory: evaluate, report and ensemble work on it
      best.toml          the chosen configuration as a recipe: `mnistlab train --recipe .../best.toml`
      summary.json       the chosen trial, its validation and test accuracy, the trial counts
      trials.csv         one row per trial: state, parameters, validation accuracy, training seconds
      study.html         the study report (pictures embedded), with history, importances and slices

Trials select on validation accuracy only: they run with `evaluate_test=false`, so no trial holds
the test set. The test set is evaluated once, for the chosen trial, after the search; the summary
says how many trials it was chosen from. Pruning (median or successive halving) acts on each
epoch's validation accuracy. A worker killed mid-trial leaves its trial "running" until its
heartbeat goes stale; the next worker marks it failed and retries it, resuming the same run
directory from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import socket
import sqlite3
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ... import atomic, machine, rundir, schema
from ..._version import __version__
from ...analysis.evaluation import evaluate
from ...errors import MnistlabError
from ...models import MODELS
from ...rundir import RunDir
from ...training import config, engine
from ...training.config import read_recipe
from ...training.engine import TrainingDiverged
from . import report
from .space import Space, read_space, suggest

OBJECTIVES = {"accuracy": "maximize", "time": "minimize"}
SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "asha", "none")
DEFAULT_VALIDATION = 5000  # what a search holds out when the recipe trains on every example
TRIALS_DIR = "trials"
SUMMARY_FILE = "summary.json"


@dataclass
class Settings:
    """One study's settings: what every worker process needs to join it."""

    recipe: str
    space: str
    trials: int
    study: str
    storage: str
    out: str  # the study directory
    workers: int = 1
    timeout: float | None = None
    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "median"
    objectives: tuple = ("accuracy",)
    heartbeat: int = 60
    overrides: dict = dataclasses.field(default_factory=dict)
    baseline: bool = True
    quiet: bool = False


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MnistlabError("`mnistlab tune` needs Optuna", hint="pip install 'mnistlab[tune]' (or optuna>=4.9)") \
            from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our one line, not its traceback too
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# ----------------------------------------------------------------------------------------------
# The story


def tune(recipe: str, space: str, *, trials: int = 20, study: str | None = None, storage: str | None = None,
         workers: int = 1, timeout: float | None = None, seed: int = 0, sampler: str = "tpe",
         pruner: str = "median", objectives=("accuracy",), out: str = "runs/tune", overrides: dict | None = None,
         heartbeat: int = 60, baseline: bool = True, quiet: bool = False) -> dict:
    """Run (or continue) a study of `trials` finished trials of `recipe` over `space`; return its summary."""
    objectives = tuple(objectives)
    check_arguments(trials, workers, timeout, sampler, pruner, objectives, heartbeat)
    check_storage(storage)
    sp = read_space(space, recipe, overrides or {})
    base = base_config(recipe, sp, workers)
    name = study or default_study_name(recipe, space, base)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise MnistlabError(f"--study {name!r}: expected letters, digits, '-', '_' and '.' only")
    study_dir = Path(out) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(recipe, space, trials, name, storage or f"sqlite:///{(study_dir / 'study.db').resolve()}",
                        str(study_dir), workers, timeout, seed, sampler, pruner, objectives, heartbeat,
                        dict(overrides or {}), baseline, quiet)
    create_study(settings, sp, base)
    say = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
    say(f"study {name} ({settings.storage}): {trials} trials of {recipe} over {sp.source}, "
        f"{workers} worker(s) x {base.threads} thread(s); trials in {study_dir / TRIALS_DIR}")
    t0 = time.perf_counter()
    if workers == 1:
        work(settings, 0)
    else:
        run_workers(settings)
    return finish(settings, sp, base, time.perf_counter() - t0)


def check_arguments(trials, workers, timeout, sampler, pruner, objectives, heartbeat) -> None:
    if trials < 1:
        raise MnistlabError(f"--trials {trials}: expected at least 1")
    if not 1 <= workers <= 256:
        raise MnistlabError(f"--workers {workers}: expected 1 to 256")
    if timeout is not None and timeout <= 0:
        raise MnistlabError(f"--timeout {timeout}: expected a number of seconds above 0")
    if sampler not in SAMPLERS:
        raise MnistlabError(f"--sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise MnistlabError(f"--pruner {pruner!r}: expected one of {', '.join(PRUNERS)}")
    if not objectives or len(set(objectives)) != len(objectives) or set(objectives) - set(OBJECTIVES) \
            or "accuracy" not in objectives:
        raise MnistlabError(f"--objectives {','.join(objectives)!r}: expected accuracy or accuracy,time")
    if heartbeat < 1:
        raise MnistlabError(f"--heartbeat {heartbeat}: expected at least 1 second")


def check_storage(storage: str | None) -> None:
    """A URL workers can share: not an in-memory SQLite database, which every connection sees empty."""
    if storage is None:
        return
    if not isinstance(storage, str) or "://" not in storage or len(storage) > 2000:
        raise MnistlabError(f"--storage {str(storage)[:80]!r}: expected a database URL",
                            hint="sqlite:///path/study.db, or an RDB URL such as postgresql://user@host/db")
    bare = storage.split("?", 1)[0].rstrip("/")
    if bare in ("sqlite:", "sqlite:/", "sqlite:///:memory:") or bare.endswith(":memory:"):
        raise MnistlabError(f"--storage {storage!r}: an in-memory SQLite database, which the study's workers and "
                            "its summary cannot share", hint="name a file: sqlite:///path/study.db (or leave "
                            "--storage out for one in the study directory)")
    if bare.startswith("sqlite:///"):
        check_sqlite_file(Path(bare[len("sqlite:///"):]), storage)


OPTUNA_TABLES = {"studies", "trials", "version_info", "alembic_version"}  # what every Optuna RDB storage holds


def check_sqlite_file(path: Path, storage: str) -> None:
    """An SQLite file that exists must be an Optuna storage: Optuna would otherwise add its tables to
    another program's database (and then fail on a `studies` table of its own)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise MnistlabError(f"--storage {storage!r}: {path} is not an SQLite database ({exc})",
                            hint="name a new file, or the study.db of an earlier study") from None
    if tables and not OPTUNA_TABLES <= tables:
        raise MnistlabError(f"--storage {storage!r}: {path} is another program's SQLite database (tables: "
                            f"{', '.join(sorted(tables)[:6])}); mnistlab leaves it as it is",
                            hint="name a new file, or the study.db of an earlier study")


def base_config(recipe: str, sp: Space, workers: int) -> config.TrainConfig:
    """The recipe with the space's fixed settings: what every trial starts from. A recipe that trains
    on every example (validation 0) gets the standard holdout, since trials select on validation; a
    trial's threads default to the cores shared out among the workers."""
    cfg = config.resolve(recipe, sp.fixed, source=f"{sp.source} [fixed]")
    changes = {"evaluate_test": False, "progress": False}
    if not cfg.validation:
        changes["validation"] = DEFAULT_VALIDATION
    if not cfg.threads:
        changes["threads"] = max(1, (os.cpu_count() or 1) // workers)
    if cfg.early_stopping:
        pass  # a trial may stop early too; pruning comes on top
    return dataclasses.replace(cfg, **changes)


def default_study_name(recipe: str, space: str, base) -> str:
    stem = lambda s: Path(s).stem if s.endswith(".toml") else s  # noqa: E731
    return f"{stem(recipe)}-{base.dataset}-{stem(space)}"


# ----------------------------------------------------------------------------------------------
# The study in its storage


def storage_for(settings: Settings):
    optuna = _optuna()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine = {"connect_args": {"timeout": 120}} if settings.storage.startswith("sqlite") else {}
    try:
        for attempt in range(SCHEMA_RACE_RETRIES + 1):
            try:
                return RDBStorage(settings.storage, engine_kwargs=engine, heartbeat_interval=settings.heartbeat,
                                  grace_period=2 * settings.heartbeat,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
            except Exception as exc:  # workers starting together on a new database race to create its tables
                if attempt == SCHEMA_RACE_RETRIES or not _lost_schema_race(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))
    except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as exc:
        raise MnistlabError(f"--storage {settings.storage!r}: cannot open it ({exc})",
                            hint="sqlite:///path/study.db, or an RDB URL such as postgresql://user@host/db") from None
    except Exception as exc:  # sqlalchemy's errors: a bad URL or an unreachable server
        raise MnistlabError(f"--storage {settings.storage!r}: cannot open it ({type(exc).__name__}: {exc})",
                            hint="sqlite:///path/study.db, or an RDB URL such as postgresql://user@host/db") from None


SCHEMA_RACE_RETRIES = 5


def _lost_schema_race(exc: Exception) -> bool:
    """Another worker created Optuna's tables (or types) first: the next attempt finds them there."""
    words = str(exc).lower()
    return type(exc).__name__ in ("IntegrityError", "ProgrammingError", "OperationalError") and (
        "already exists" in words or "duplicate" in words)


def make_sampler(settings: Settings, worker: int):
    optuna = _optuna()
    seed = settings.seed * 1000 + worker  # workers must not propose the same points
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise MnistlabError("--sampler cmaes needs the cmaes package", hint="pip install cmaes") from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def make_pruner(settings: Settings):
    optuna = _optuna()
    if settings.pruner == "none" or len(settings.objectives) > 1:  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    if settings.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def load_study(settings: Settings, worker: int = 0):
    optuna = _optuna()
    return optuna.load_study(study_name=settings.study, storage=storage_for(settings),
                             sampler=make_sampler(settings, worker), pruner=make_pruner(settings))


def create_study(settings: Settings, sp: Space, base) -> None:
    """The study in its storage, created once; joining an existing study with another recipe, space or
    objectives is an error that names what differs."""
    optuna = _optuna()
    identity = {"recipe": settings.recipe, "space": sp.as_dict(), "objectives": list(settings.objectives),
                "overrides": {k: str(v) for k, v in settings.overrides.items()}}
    storage = storage_for(settings)
    directions = [OBJECTIVES[o] for o in settings.objectives]
    study = optuna.create_study(study_name=settings.study, storage=storage, directions=directions,
                                load_if_exists=True)
    existing = study.user_attrs.get("identity")
    if existing is None:
        study.set_user_attr("identity", identity)
        study.set_user_attr("created", {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mnistlab": __version__,
                                        "host": socket.gethostname()})
        if settings.baseline:
            params = baseline_params(sp, base)
            if params:
                study.enqueue_trial(params, user_attrs={"baseline": True})
        return
    differs = [k for k in identity if json.dumps(identity[k], sort_keys=True) != json.dumps(existing[k], sort_keys=True)]
    if differs:
        raise MnistlabError(f"study {settings.study} in {settings.storage} was created with another "
                            f"{' and '.join(differs)}",
                            hint="name a new study (--study NAME), or run it with its own recipe, space and objectives")


def baseline_params(sp: Space, base) -> dict:
    """The recipe's own values of the searched settings, where the space can express them: trial 0 is
    the recipe itself, measured under the same conditions as every trial."""
    current = base.as_dict()
    params = {}
    for p in sp.params:
        if any(current.get(k) not in allowed for k, allowed in p.when.items()):
            continue
        value = (current.get("model_args") or {}).get(p.name.split(".", 1)[1]) if p.name.startswith("model_args.") \
            else current.get(p.name)
        if value is None and p.name.startswith("model_args."):

            value = MODELS[base.model].options().get(p.name.split(".", 1)[1])
        if p.kind == "choice" and value not in p.choices:
            return {}
        if p.kind != "choice" and (value is None or not p.low <= value <= p.high):
            return {}
        params[p.name] = value
    return params


# ----------------------------------------------------------------------------------------------
# Workers and trials


def run_workers(settings: Settings) -> None:
    """`workers` processes, each optimising the shared study until it has its trials."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or locks inherited
    procs = [ctx.Process(target=work, args=(settings, i), name=f"mnistlab-tune-{i}") for i in range(settings.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise MnistlabError(f"tuning worker(s) {', '.join(failed)} failed (exit codes "
                            f"{', '.join(str(p.exitcode) for p in procs if p.exitcode != 0)})",
                            hint="their error is printed above; run again to continue the study")


def finished_count(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def work(settings: Settings, worker: int) -> None:
    """One worker: trials until the study has `settings.trials` finished ones (or the timeout)."""
    import torch

    _optuna()
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState


    sp = read_space(settings.space, settings.recipe, settings.overrides)
    base = base_config(settings.recipe, sp, settings.workers)
    study = load_study(settings, worker)
    if finished_count(study) >= settings.trials:
        return
    threads = torch.get_num_threads()
    try:
        study.optimize(lambda trial: objective(trial, settings, sp, base), n_trials=None, timeout=settings.timeout,
                       catch=(TrainingDiverged,), gc_after_trial=False,
                       callbacks=[MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))])
    except MnistlabError as exc:
        if worker or settings.workers > 1:  # in a child process: say it here, the parent reports the exit code
            print(f"mnistlab: error (tuning worker {worker}): {exc.message}", flush=True)
            raise SystemExit(2) from None
        raise
    finally:
        torch.set_num_threads(threads)  # an in-process worker leaves the caller's threads as they were


def objective(trial, settings: Settings, sp: Space, base):
    """Train one trial's config as an ordinary run; report validation accuracy each epoch for pruning."""
    import optuna


    overrides = suggest(sp, trial, base.as_dict())
    # A retry of a trial whose worker died carries the dead trial's user attributes (Optuna copies
    # them), so it finds that trial's run directory and resumes it.
    # Where the dead worker's run directory can be reached (this machine, or a shared disk), the retry
    # resumes it there from its last checkpoint; elsewhere it trains the trial again under the same name.
    # A study's storage may come from anyone: the run_dir it names is used elsewhere than this study's own
    # trials/ only where it is a trial's run another worker left (a run directory in a trials/ folder),
    # and nothing outside trials/ is ever removed.
    earlier = trial.user_attrs.get("run_dir")
    name = Path(str(earlier)).name if earlier else f"trial-{trial.number:04d}"
    if not (name.startswith("trial-") and name[6:].isdigit()):
        name = f"trial-{trial.number:04d}"
    trials = Path(settings.out) / TRIALS_DIR
    parent = Path(str(earlier)).parent if earlier and _a_workers_trial(Path(str(earlier))) else trials
    cfg = dataclasses.replace(base, **overrides, out=str(parent), name=name)
    config.validate(cfg)
    run = RunDir(Path(cfg.out) / name)
    if earlier:
        trial.set_user_attr("retry_of", trial.user_attrs.get("trial", None))
    trial.set_user_attr("trial", trial.number)
    trial.set_user_attr("run_dir", str(run.path.resolve()))
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    pruned_at: list = []
    single = len(settings.objectives) == 1

    def on_epoch(row):
        if not single or row.get("val_acc") is None:
            return None
        trial.report(row["val_acc"], row["epoch"])
        if row["epoch"] < cfg.epochs and trial.should_prune():  # after the last epoch there is nothing to save
            pruned_at.append(row["epoch"])
            return f"pruned by the study's {settings.pruner} pruner (study {settings.study}, trial {trial.number})"
        return None

    t0 = time.perf_counter()
    try:
        summary = _train_or_resume(cfg, run, on_epoch, engine, parent)
    except engine.TrainingDiverged as exc:
        trial.set_user_attr("diverged", exc.message)
        if single:  # a setting that does not train is a bad setting: pruned, and the search goes on
            raise optuna.TrialPruned(exc.message) from None
        raise
    for key in ("val_acc", "train_s", "wall_s", "epochs_run", "best_epoch", "params"):
        trial.set_user_attr(key, summary.get(key))
    if not settings.quiet:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        state = f"pruned at epoch {pruned_at[0]}" if pruned_at else "done"
        print(f"trial {trial.number}: {shown} -> val {summary['val_acc']:.2%} ({state}, {summary['train_s']:.0f}s "
              f"training, {time.perf_counter() - t0:.0f}s)", flush=True)
    if pruned_at:
        raise optuna.TrialPruned(f"pruned at epoch {pruned_at[0]}")
    values = {"accuracy": summary["val_acc"], "time": summary["train_s"]}
    return values["accuracy"] if single else tuple(values[o] for o in settings.objectives)


def _a_workers_trial(path: Path) -> bool:
    """Whether `path` is a trial's run another worker left, interrupted or finished (on a disk they
    share): a run directory named trial-N in a folder named trials/, no link on the way."""
    try:
        return (path.parent.name == TRIALS_DIR and path.name.startswith("trial-") and not path.is_symlink()
                and not path.parent.is_symlink() and RunDir.is_run(path)
                and (RunDir(path).last.is_file() or RunDir(path).summary.is_file()))
    except OSError:
        return False


def _train_or_resume(cfg, run: RunDir, on_epoch, engine, trials: Path) -> dict:
    """Train the trial's run, or finish the run an earlier attempt of this trial left behind."""
    if run.path.exists() or run.path.is_symlink():
        rundir.no_links_below(trials, run.path)
        summary = run.read_summary()
        if summary is not None and summary.get("val_acc") is not None:
            return summary  # it finished; the worker died before telling the study
        if run.last.is_file() and summary is None:
            return engine.resume(run.path, {"progress": False, "threads": cfg.threads}, quiet=True,
                                    on_epoch=on_epoch)
        rundir.remove_run(trials, run.path)  # killed before its first checkpoint: nothing to keep
    return engine.train(cfg, quiet=True, on_epoch=on_epoch)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------------------------
# The result: the chosen trial, its test accuracy (once), the recipe, the report


def finish(settings: Settings, sp: Space, base, elapsed: float) -> dict:
    """Summarise the study: choose on validation, evaluate the test set once, write recipe and report."""
    from optuna.trial import TrialState


    study = load_study(settings)
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        raise MnistlabError(f"study {settings.study}: no trial finished, so there is nothing to choose",
                            hint="see the trials' errors above; widen the space or give it more time")
    study_dir = Path(settings.out)
    single = len(settings.objectives) == 1
    front = [] if single else sorted(study.best_trials, key=lambda t: t.values[1])
    chosen = study.best_trial if single else max(front, key=lambda t: (t.values[0], -t.values[1]))
    counts = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in
              (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)}
    previous = read_study_summary(study_dir) if (study_dir / SUMMARY_FILE).is_file() else {}
    test = test_once(chosen, previous)
    baseline = next((t for t in done if t.user_attrs.get("baseline")), None)
    recipe_path = write_recipe(settings, sp, base, chosen, len(done) + counts["pruned"])
    summary = {
        "study": settings.study, "storage": settings.storage, "recipe": settings.recipe, "space": sp.as_dict(),
        "objectives": list(settings.objectives), "sampler": settings.sampler, "seed": settings.seed,
        "pruner": settings.pruner if single else "none (multi-objective)", "trials": counts,
        "elapsed_s": elapsed, "workers": settings.workers, "threads_per_trial": base.threads,
        "validation": base.validation, "chosen": trial_row(chosen), "test": test,
        "baseline": trial_row(baseline) if baseline else None, "best_recipe": str(recipe_path),
        "pareto": [trial_row(t) for t in front],
        "environment": _environment(),
    }
    atomic.write_text(study_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    write_trials_csv(study_dir / "trials.csv", trials)
    summary["report"] = str(report.write(study, summary, study_dir))
    atomic.write_text(study_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    if not settings.quiet:
        print(format_summary(summary))
    return summary


def trial_row(t) -> dict:
    return {"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
            "values": list(t.values) if t.values else None, "val_acc": t.user_attrs.get("val_acc"),
            "train_s": t.user_attrs.get("train_s"), "run_dir": t.user_attrs.get("run_dir"),
            "baseline": bool(t.user_attrs.get("baseline"))}


def test_once(chosen, previous: dict) -> dict:
    """The chosen trial's test accuracy: evaluated now if no earlier finish of this study evaluated this
    same trial (a study continued later may choose another; the count says how often the test set was
    read in all)."""

    before = previous.get("test") or {}
    if before.get("trial") == chosen.number and before.get("accuracy") is not None:
        return before
    run_dir = chosen.user_attrs.get("run_dir")
    if not run_dir or not RunDir.is_run(run_dir):
        return {"trial": chosen.number, "accuracy": None, "evaluations": before.get("evaluations", 0),
                "note": f"the run directory {run_dir} is not on this machine"}
    result = evaluate(run_dir, split="test", pictures=False)
    return {"trial": chosen.number, "accuracy": result["accuracy"], "errors": result["errors"], "n": result["n"],
            "evaluations": before.get("evaluations", 0) + 1, "run_dir": run_dir}


def write_recipe(settings: Settings, sp: Space, base, chosen, n_trials: int) -> Path:
    """The chosen trial's configuration as a recipe: the original recipe's settings, the space's fixed
    ones and the chosen parameters (the search's own holdout and threads left out)."""

    values = {k: v for k, v in read_recipe(settings.recipe).items() if k != "recipe"}
    values.update(sp.fixed)
    cfg = RunDir(chosen.user_attrs["run_dir"]).read_json(RunDir.CONFIG) if chosen.user_attrs.get("run_dir") else None
    for name in chosen.params:
        key = name.split(".", 1)[0]
        values[key] = cfg[key] if cfg is not None else chosen.params[name]
    for key in ("threads", "evaluate_test", "progress", "out", "name", "recipe"):
        if key not in sp.fixed:
            values.pop(key, None)
    acc = chosen.user_attrs.get("val_acc")
    lines = [f"# Chosen by `mnistlab tune` (study {settings.study}): trial {chosen.number} of {n_trials} finished,",
             f"# validation accuracy {acc:.4%} on the {base.validation:g}-image holdout (training seed {base.seed});"
             if acc is not None else "#",
             f"# recipe {settings.recipe}, space {sp.source}. Train it with `mnistlab train --recipe THIS_FILE`."]
    lines += [f"{k} = {_toml(v)}" for k, v in values.items() if v is not None]
    path = Path(settings.out) / "best.toml"
    atomic.write_text(path, "\n".join(lines) + "\n")
    return path


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items() if v is not None) + " }"
    raise MnistlabError(f"cannot write {value!r} to a recipe")


def write_trials_csv(path: Path, trials) -> None:
    import csv
    import io

    names = sorted({n for t in trials for n in t.params})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "state", *names, "val_acc", "train_s", "baseline", "run_dir"])
    for t in trials:
        w.writerow([t.number, t.state.name.lower(), *(t.params.get(n, "") for n in names),
                    t.user_attrs.get("val_acc", ""), t.user_attrs.get("train_s", ""),
                    bool(t.user_attrs.get("baseline")), t.user_attrs.get("run_dir", "")])
    atomic.write_text(path, buf.getvalue())


def format_summary(s: dict) -> str:
    c, chosen, test = s["trials"], s["chosen"], s["test"]
    lines = [f"study {s['study']}: {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed "
             f"({s['elapsed_s']:.0f}s this session, {s['workers']} worker(s) x {s['threads_per_trial']} thread(s))",
             f"chosen: trial {chosen['number']} " + ", ".join(f"{k}={_short(v)}" for k, v in chosen["params"].items())
             + f": val {chosen['val_acc']:.2%} ({chosen['train_s']:.0f}s training)"]
    if s.get("baseline"):
        b = s["baseline"]
        lines.append(f"baseline (the recipe's own values, trial {b['number']}): val {b['val_acc']:.2%} "
                     f"({b['train_s']:.0f}s training); chosen - baseline {100 * (chosen['val_acc'] - b['val_acc']):+.2f} "
                     "points")
    if test.get("accuracy") is not None:
        lines.append(f"test accuracy of the chosen trial, evaluated once after the search: {test['accuracy']:.2%} "
                     f"({test['errors']} errors in {test['n']}; chosen from {c['complete'] + c['pruned']} trials; "
                     f"test set read {test['evaluations']} time(s) by this study)")
    if s["pareto"]:
        lines.append("Pareto front (validation accuracy vs training seconds):")
        lines += [f"  trial {t['number']}: {t['val_acc']:.2%} in {t['train_s']:.0f}s  " +
                  ", ".join(f"{k}={_short(v)}" for k, v in t["params"].items()) for t in s["pareto"]]
    lines.append(f"recipe: {s['best_recipe']}   report: {s.get('report', '')}")
    return "\n".join(lines)


def _environment() -> dict:
    return machine.describe()


def study_of(run: RunDir) -> Path | None:
    """The study directory a trial run belongs to (its parent's parent holds the study's summary)."""
    parent = run.path.resolve().parent
    if parent.name == TRIALS_DIR and (parent.parent / SUMMARY_FILE).is_file():
        return parent.parent
    return None


_TRIAL_ROW = schema.obj({"number": schema.integer(0), "val_acc": schema.number(0, 1, optional=True),
                         "train_s": schema.number(0, optional=True), "run_dir": schema.text(4096, optional=True),
                         "params": schema.obj()})
# What a study's summary.json must hold for the report, the study page and a continued study to read it.
STUDY_SPEC = schema.obj({
    "study": schema.text(200), "objectives": schema.listof(schema.choice(*OBJECTIVES), 2),
    "trials": schema.obj({k: schema.integer(0, optional=True) for k in ("complete", "pruned", "fail")}),
    "chosen": _TRIAL_ROW, "pareto": schema.listof(_TRIAL_ROW, 100_000, optional=True),
    "test": schema.obj({"trial": schema.integer(0, optional=True), "accuracy": schema.number(0, 1, optional=True),
                        "evaluations": schema.integer(0, optional=True)}, optional=True),
})


def read_study_summary(study_dir: Path) -> dict:
    """A study's summary.json, checked (STUDY_SPEC)."""
    return schema.read_json(Path(study_dir) / SUMMARY_FILE, STUDY_SPEC,
                            hint="the study's files are damaged: run `mnistlab tune` on it again to rewrite them")
