"""The training engine on real MNIST: accuracy, reproducibility, resume after SIGKILL, seeds, torchrun,
and every bad input (with nothing of an existing run overwritten)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from builders import mnistlab as mnistlab_cli
from builders import snapshot, write_tiny
from safetensors.torch import load_file

from mnistlab import MnistlabError
from mnistlab.bench import gpu as gpu_bench
from mnistlab.cli import main as cli_main
from mnistlab.data import registry as datasets
from mnistlab.models.checkpoint import load as load_checkpoint
from mnistlab.models.predictor import load_model
from mnistlab.training import config
from mnistlab.training.engine import resume, shard, train, train_seeds

QUIET = {"progress": False}


def cfg(**kw) -> config.TrainConfig:
    return config.resolve(None, {**QUIET, **kw})


@pytest.mark.slow
def test_mlp_reaches_97_percent_on_real_mnist(tmp_path):
    # 784-256-10, Adam, cosine schedule, 5 epochs: 97.87% +- 0.08% over seeds 0-2 when written
    s = train(cfg(model="mlp", model_args={"hidden": [256]}, epochs=5, batch_size=100, schedule="cosine",
                  out=str(tmp_path)), quiet=True)
    assert s["test_acc"] >= 0.97
    assert s["val_acc"] >= 0.965 and s["best_epoch"] >= 1
    run = Path(s["run_dir"])
    assert {p.name for p in run.iterdir()} >= {"config.json", "log.jsonl", "last.safetensors", "last.json",
                                                "best.safetensors", "best.json", "summary.json"}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[0]["environment"]["torch"] == torch.__version__
    assert [r["epoch"] for r in log[1:]] == [1, 2, 3, 4, 5]
    # the saved model, reloaded, makes exactly the errors train reported (fp32, the run's batch and threads)
    model, meta = load_model(run)
    assert meta["dataset"] == "mnist" and meta["normalization"]["normalize"] == "standardize"
    import mnistlab
    from mnistlab.models.inference import accuracy_and_errors
    from mnistlab.models.predictor import load_predictor

    test = mnistlab.load("mnist").test
    acc, errors = accuracy_and_errors(load_predictor(run).probs(test.images, s["evaluation"]["batch_size"]),
                                      test.labels)
    assert errors == s["test_errors"] and acc == s["test_acc"]
    assert s["evaluation"]["precision"] == "fp32"


@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path):
    # augmentation, dropout and shuffling all draw random numbers: the seed must pin every one
    base = dict(model="mlp", model_args={"dropout": 0.3}, train_subset=3000, validation=500, epochs=2,
                augment="elastic", out=str(tmp_path))
    a = train(cfg(**base, name="a"), quiet=True)
    b = train(cfg(**base, name="b"), quiet=True)
    train(cfg(**base, name="c", seed=1), quiet=True)
    assert a["test_acc"] == b["test_acc"] and a["val_acc"] == b["val_acc"]
    wa, _ = load_checkpoint(tmp_path / "a" / "best.safetensors")
    wb, _ = load_checkpoint(tmp_path / "b" / "best.safetensors")
    wc, _ = load_checkpoint(tmp_path / "c" / "best.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    """`bench gpu`'s own check, here on the CPU at the run's native precision: one run whole, another
    SIGKILLed after its first checkpoint and resumed (`train --resume`), each in a new process; their
    weights, optimizer state and numbers bit for bit the same."""
    settings = {"model": "keras-cnn", "train_subset": 2000, "validation": 500, "epochs": 3, "augment": "seed",
                "optimizer": "sgd", "lr": 0.05, "schedule": "onecycle", "ema": 0.99}
    row = gpu_bench.kill_and_resume(settings, out=tmp_path)
    assert "error" not in row, row.get("error")
    assert row["bit_identical"] is True and row["max_abs_diff"] == 0 and row["passed"] is True
    assert row["whole_test_acc"] == row["resumed_test_acc"] and "killed after epoch" in row["name"]
    resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    for key in ("test_acc", "test_loss", "val_acc", "best_epoch", "epochs_run"):
        assert resumed[key] == whole[key], key
    log = [json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "epoch" in r] == [1, 2, 3]  # each epoch once: it went on, not again
    assert any(r.get("event") == "resume" for r in log)


def test_several_seeds_are_summarised(tmp_path, capsys):
    s = train_seeds(cfg(model="logreg", train_subset=2000, validation=500, epochs=1, out=str(tmp_path)), [0, 1, 2])
    assert s["seeds"] == [0, 1, 2] and len(s["runs"]) == 3
    accs = [json.loads((Path(r) / "summary.json").read_text())["test_acc"] for r in s["runs"]]
    assert s["test_acc"]["mean"] == pytest.approx(sum(accs) / 3)
    assert s["test_acc"]["min"] == min(accs) and s["test_acc"]["max"] == max(accs) and s["test_acc"]["std"] > 0
    assert "3 seeds [0, 1, 2]: test accuracy mean" in capsys.readouterr().out


@pytest.mark.parametrize("n, world, batch", [(10, 2, 4), (8000, 2, 128), (997, 3, 96), (60000, 4, 256)])
def test_the_processes_take_disjoint_shards_that_cover_the_epoch(n, world, batch):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    n_rank, per_rank = n // world, batch // world
    shards = [shard(order, n_rank, r, world) for r in range(world)]
    assert all(len(s) == n_rank for s in shards)
    taken = torch.cat(shards)
    assert len(set(taken.tolist())) == len(taken) == n_rank * world  # disjoint
    assert set(taken.tolist()) == set(order[: n_rank * world].tolist())  # all of the epoch's first n_rank * world
    for i in range(0, n_rank, per_rank):  # step i of all processes = step i of one process with the whole batch
        together = torch.cat([s[i:i + per_rank] for s in shards])
        assert set(together.tolist()) == set(order[i * world:min(i + per_rank, n_rank) * world].tolist())


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path):
    args = ["--model", "mlp", "--train-subset", "8000", "--validation", "1000", "--epochs", "2",
            "--batch-size", "128", "--device", "cpu", "--out", str(tmp_path), "--no-progress", "--threads", "1",
            "--precision", "fp32"]  # summation order differs between 1 and 2 processes: keep it out of bf16's
    threads = torch.get_num_threads()
    try:  # the one-process run in this process (--threads 1 would outlast it)
        assert cli_main(["train", *args, "--name", "one"]) == 0
    finally:
        torch.set_num_threads(threads)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29533", "-m", "mnistlab", "train", *args, "--name", "two"],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["world_size"] == 2 and s1["world_size"] == 1
    # the same examples in every step, summed in another order: fp32 keeps the weights within rounding,
    # and the errors the same (measured: 837 and 837 on 2 AVX2 cores)
    assert s1["test_acc"] > 0.9 and s1["test_errors"] == s2["test_errors"] and s1["val_acc"] == s2["val_acc"]
    w1, w2 = load_file(tmp_path / "one" / "best.safetensors"), load_file(tmp_path / "two" / "best.safetensors")
    assert w1.keys() == w2.keys() and all(torch.allclose(w1[k], w2[k], atol=1e-4) for k in w1)
    # rank 0 alone wrote the run: one log header, one line per epoch
    log = (tmp_path / "two" / "log.jsonl").read_text().splitlines()
    assert len(log) == 3 and json.loads(log[0])["world_size"] == 2


@pytest.mark.parametrize("overrides, fragment", [
    ({"model": "resnet"}, "unknown model 'resnet'"),
    ({"optimiser": "adam"}, "unknown config key 'optimiser'"),
    ({"epochs": "ten"}, "epochs='ten' is not a valid int"),
    ({"epochs": 0}, "epochs=0: expected at least 1"),
    ({"lr": "fast"}, "lr='fast' is not a valid float"),
    ({"schedule": "linear"}, "schedule='linear': expected none | step"),
    ({"augment": "heavy"}, "augment='heavy': expected none | seed | an2020 | elastic"),
    ({"dataset": "mnsit"}, "unknown dataset 'mnsit'"),
    ({"model": "m7", "dataset": "tiny12", "validation": 6}, "does not fit input shape 1x12x12"),
    ({"model_args": {"depth": 3}}, "has no option depth"),
    ({"early_stopping": 2, "validation": 0}, "early_stopping needs a validation split"),
])
def test_bad_config_fails_before_writing_anything(overrides, fragment, tmp_path, registered, empty_cache):
    tiny_spec = dataclasses.replace(datasets.get_spec("kmnist"), name="tiny12", image_shape=(12, 12))
    tiny, _ = write_tiny(tiny_spec, tmp_path / "data", name="tiny12")
    registered(tiny)
    out = tmp_path / "runs"
    with pytest.raises(MnistlabError) as err:
        train(config.resolve(None, {"out": str(out), "data_dir": str(tmp_path / "data"), **QUIET, **overrides}))
    assert fragment in str(err.value)
    assert not out.exists()


def test_run_errors_leave_existing_runs_untouched(tmp_path, capsys):
    c = cfg(model="logreg", train_subset=1000, validation=200, epochs=2, out=str(tmp_path), name="done")
    train(c, quiet=True)
    before = snapshot(tmp_path)
    with pytest.raises(MnistlabError, match="already exists"):  # an explicit name is never reused
        train(c, quiet=True)
    with pytest.raises(MnistlabError, match="already finished"):
        resume(tmp_path / "done")
    with pytest.raises(MnistlabError, match="not a run directory"):
        resume(tmp_path / "nope")
    # a finished run's last checkpoint, resumed with another learning rate (summary removed in a copy)
    import shutil

    shutil.copytree(tmp_path / "done", tmp_path.parent / "copy")
    (tmp_path.parent / "copy" / "summary.json").unlink()
    with pytest.raises(MnistlabError, match=r"different config: lr \(run: 0.001, now: 0.5\)"):
        resume(tmp_path.parent / "copy", {"lr": "0.5"})
    # a corrupt checkpoint
    last = tmp_path.parent / "copy" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(MnistlabError, match="not a readable safetensors checkpoint"):
        resume(tmp_path.parent / "copy")
    # a missing one
    last.unlink()
    with pytest.raises(MnistlabError, match="no last.safetensors to resume from"):
        resume(tmp_path.parent / "copy")
    with pytest.raises(MnistlabError, match="does not exist"):
        load_model(tmp_path / "done" / "nothing.safetensors")
    assert snapshot(tmp_path) == before
    # the default name never overwrites: a second run gets a new directory
    d = cfg(model="logreg", train_subset=500, validation=100, epochs=1, out=str(tmp_path))
    first, second = train(d, quiet=True), train(d, quiet=True)
    assert first["run_dir"] != second["run_dir"] and second["run_dir"].endswith("-2")
    # through the CLI: one message, exit 2, no traceback
    assert cli_main(["train", "--model", "logreg", "--epochs", "x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "epochs='x' is not a valid int" in err and "Traceback" not in err


@pytest.mark.parametrize("recipe", config.list_recipes())
def test_every_recipe_resolves_and_fits_mnist(recipe):
    from mnistlab.models import create_model

    c = config.resolve(recipe)
    assert c.recipe == recipe
    create_model(c.model, (1, 28, 28), 10, **c.model_args)


@pytest.mark.slow
# an2020-m5 resolves and builds in test_every_recipe_resolves_and_fits_mnist (its dry run here cost 35 s)
@pytest.mark.parametrize("recipe", ["seed-mlp", "seed-cnn", "pytorch-example", "fast"])
def test_recipe_dry_runs_from_the_cli(recipe, tmp_path, capsys):
    argv = ["train", "--recipe", recipe, "--dry-run", "--out", str(tmp_path)]
    if recipe == "seed-cnn":  # the installed command in a new process once; the others through its main() here
        out = mnistlab_cli(*argv)
        assert out.returncode == 0, out.stderr
        stdout = out.stdout
        # its output is a pipe, not a terminal: one line per epoch, no progress bar redrawn in a log file
        assert "\r" not in out.stderr and "it/s" not in out.stderr
        assert stdout.count("epoch 1/1") == 1
    else:
        assert cli_main(argv) == 0
        stdout = capsys.readouterr().out
    assert "best val" in stdout and "test set not evaluated" in stdout  # a smoke run leaves it unread
    assert "nothing kept" in stdout and not any(tmp_path.iterdir())  # and writes no run directory


# ---------- runs that go wrong ----------

def test_a_diverging_run_stops_with_the_epoch_and_step(tmp_path):
    c = cfg(model="mlp", optimizer="sgd", lr=1e12, train_subset=4000, validation=500, epochs=3, out=str(tmp_path),
            name="boom")
    with pytest.raises(MnistlabError, match=r"training diverged: the loss stopped being finite at epoch 1, "
                                            r"step \d+ of 32") as err:
        train(c, quiet=True)
    assert "lower the learning rate" in err.value.hint
    log = [json.loads(line) for line in (tmp_path / "boom" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "diverged" and log[-1]["epoch"] == 1
    assert not (tmp_path / "boom" / "summary.json").exists()  # not a success


def test_a_dataset_of_identical_images_is_refused_before_training(tmp_path, registered, empty_cache):
    # an unpinned CIFAR-10 copy whose images are all zero: std 0 made every loss NaN, and the run
    # finished "successfully" with acc 100%
    import tarfile

    import numpy as np

    tiny, _ = write_tiny(datasets.get_spec("cifar10"), tmp_path / "data", name="zeros")
    archive = tmp_path / "data" / "zeros" / "cifar-10-binary.tar.gz"
    with tarfile.open(archive) as tf:
        tf.extractall(tmp_path / "data" / "zeros", filter="data")
    archive.unlink()
    for path in (tmp_path / "data" / "zeros").rglob("*.bin"):
        records = np.frombuffer(path.read_bytes(), np.uint8).reshape(-1, 3073).copy()
        records[:, 1:] = 0
        path.write_bytes(records.tobytes())
    registered(tiny)
    with pytest.raises(MnistlabError, match=r"zeros: normalisation mean \[0.0, 0.0, 0.0\], std \[0.0, 0.0, 0.0\]") \
            as err:
        train(cfg(model="logreg", dataset="zeros", data_dir=str(tmp_path / "data"), validation=4,
                  out=str(tmp_path / "runs")), quiet=True)
    assert "every training pixel has the same value" in err.value.hint
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def interrupted(tmp_path):
    """A run that finished 2 of its 3 epochs, as a kill would leave it (summary removed)."""
    c = cfg(model="logreg", train_subset=2000, validation=500, epochs=2, out=str(tmp_path), name="run")
    train(c, quiet=True)
    run = tmp_path / "run"
    (run / "summary.json").unlink()
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "epochs": 3}))
    from safetensors import safe_open

    with safe_open(run / "last.safetensors", "pt") as f:
        meta = json.loads(f.metadata()["mnistlab"])
    meta["config"]["epochs"] = 3
    from test_checkpoints import rewritten

    rewritten(run / "last.safetensors", run / "last.safetensors.new", meta=meta).replace(run / "last.safetensors")
    return run


def test_resume_after_a_log_line_cut_short(interrupted):
    with open(interrupted / "log.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_loss": 0.5, "trai')  # what a kill mid-write leaves
    s = resume(interrupted, quiet=True)
    assert s["epochs_run"] == 3
    log = [json.loads(line) for line in (interrupted / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "train_loss" in r] == [1, 2, 3]
    assert next(r for r in log if r.get("event") == "resume")["damaged_lines_dropped"] == 1


def test_resume_from_damaged_checkpoints_is_a_clear_error(interrupted, tmp_path):
    from safetensors.torch import load_file
    from test_checkpoints import meta_of, rewritten

    last = interrupted / "last.safetensors"
    tensors, meta = load_file(last), meta_of(last)
    cases = [(dict(tensors=({k: v for k, v in tensors.items() if k != "model/1.bias"})), "missing model/1.bias"),
             (dict(meta={k: v for k, v in meta.items() if k != "optimizer"}), "field 'optimizer'"),
             (dict(meta={**meta, "history": "none"}), "field 'history'"),
             (dict(tensors={k: v for k, v in tensors.items() if k != "rng/torch"}), "random-number state"),
             (dict(meta={**meta, "optimizer": {"param_groups": [{}], "scalars": {}}}), "cannot restore")]
    for change, fragment in cases:
        broken = tmp_path / "broken"
        import shutil

        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(interrupted, broken)
        rewritten(last, broken / "last.safetensors", **change)
        with pytest.raises(MnistlabError, match=fragment):
            resume(broken, quiet=True)


@pytest.mark.parametrize("settings", [
    dict(optimizer="sgd", lr=0.05, augment="elastic", label_smoothing=0.1),
    # An et al.'s recipe on the graph path: Adam, their rotation/translation, an EMA of the weights;
    # and gradient clipping, which the graph step now holds too
    dict(optimizer="adam", lr=0.002, augment="an2020", ema=0.9, grad_clip=0.5),
], ids=["sgd-elastic", "adam-an2020-ema-clip"])
def test_the_step_a_cuda_graph_captures_trains_like_the_eager_step(mnist, settings):
    """CUDA graphs need a GPU, but what they add is only capture and replay: the step over static
    buffers (indices, augmentation draws) must train exactly like the eager step, augmentation on,
    after the warm-up steps that capture needs (`rehearse`), which must leave no trace."""
    from mnistlab.data.normalization import Normalization
    from mnistlab.models import create_model
    from mnistlab.training.ema import EMA
    from mnistlab.training.optim import make_optimizer
    from mnistlab.training.steps import EagerStep, StaticStep

    c = cfg(model="fast", **settings)
    norm = Normalization("standardize", (0.1307,), (0.3081,))
    x, y = mnist.train.images[:512], mnist.train.labels[:512]
    weights = []
    for kind in ("eager", "static"):
        torch.manual_seed(0)
        model = create_model("fast", (1, 28, 28), 10)
        opt = make_optimizer(c, model.parameters())
        ema = EMA(model, c.ema) if c.ema else None
        aug = config.augmentation(c)
        gen = torch.Generator().manual_seed(7)
        if kind == "eager":
            step = EagerStep(model, model, opt, x, y, norm, aug, c, torch.device("cpu"), ema=ema)
        else:
            step = StaticStep(model, opt, x, y, norm, aug, c, 64, torch.device("cpu"), ema=ema)
            step.rehearse(3)  # as CudaGraphStep does before capture
        for i in range(4):
            loss, _ = step(torch.arange(i * 64, (i + 1) * 64), gen)
        weights.append([p.detach().clone() for p in model.parameters()]
                       + ([t.detach().clone() for t in ema.state_dict().values()] if ema else []))
    assert len(weights[0]) == len(weights[1])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    # and the config no longer refuses augmentation with cuda_graphs (it refused only the preset before,
    # and rotate/translate/zoom were silently dropped), nor Adam and the EMA (An et al.'s recipes)
    assert cfg(cuda_graphs=True, optimizer="sgd", rotate=10, translate=0.1).cuda_graphs
    assert cfg(cuda_graphs=True, optimizer="adam", ema=0.999, augment="an2020").cuda_graphs


@pytest.mark.parametrize("settings", [dict(optimizer="sgd", augment="elastic", lr=0.05),
                                      dict(optimizer="adam", augment="an2020", ema=0.999, grad_clip=1.0, lr=0.001)],
                         ids=["sgd", "an2020-adam-ema-clip"])
def test_the_captured_step_never_reads_a_device_value_on_the_host(mnist, settings):
    """A CUDA graph cannot hold a host read of a device value (`.item()`, `if tensor:`): capture fails,
    or bakes the value read then into every replay. The step the graph captures, run on the CPU under
    a dispatch mode that sees every aten op, must contain none. (torch's AveragedModel fails this: it
    asks `n_averaged == 0` at every update; so does `_foreach_lerp_` with a tensor weight.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    from mnistlab.data.normalization import Normalization
    from mnistlab.models import create_model
    from mnistlab.training.ema import EMA
    from mnistlab.training.optim import make_optimizer
    from mnistlab.training.steps import StaticStep

    class HostReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.reads = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__ in ("_local_scalar_dense.default", "is_nonzero.default", "item.default"):
                self.reads.append(str(func))
            return func(*args, **(kwargs or {}))

    c = cfg(model="m5" if settings["optimizer"] == "adam" else "fast", cuda_graphs=True, **settings)
    model = create_model(c.model, (1, 28, 28), 10)
    opt = make_optimizer(c, model.parameters())  # capturable, as on the GPU
    for group in opt.param_groups:  # as CudaGraphStep does: the schedule fills a tensor in place
        group["lr"] = torch.tensor(float(group["lr"]))
    ema = EMA(model, c.ema) if c.ema else None
    step = StaticStep(model, opt, mnist.train.images[:256], mnist.train.labels[:256],
                      Normalization("scale", (0.0,), (1.0,)), config.augmentation(c), c, 32, torch.device("cpu"),
                      ema=ema)
    step.run()  # the optimizer creates its state on the first step (eager warm-up, before capture)
    with HostReads() as spy:
        step.run()
    assert spy.reads == []
    if ema is not None:  # the check can fail: the reference EMA reads n_averaged on the host
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
        ref.update_parameters(model)
        with HostReads() as spy:
            ref.update_parameters(model)
        assert spy.reads


def first_device(model):
    return next(model.parameters()).device


def test_ema_matches_torch_averaged_model_and_waits_for_nothing():
    """The sync-free EMA does AveragedModel's arithmetic (a copy first, then lerp by 1 - decay), over
    parameters and BatchNorm buffers, and keeps its state_dict format (checkpoints stay readable)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from mnistlab.models import create_model
    from mnistlab.training.ema import EMA

    torch.manual_seed(0)
    model = create_model("m5", (1, 28, 28), 10)
    ours = EMA(model, 0.9)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    model.train()
    for i in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(8, 1, 28, 28))  # moves the BatchNorm running statistics
        ours.update_parameters(model)
        ref.update_parameters(model)
    a, b = ours.state_dict(), ref.state_dict()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert int(a["n_averaged"]) == 3
    assert a["n_averaged"].device == first_device(model)  # on a GPU: inside the graph, not read once at capture
    first = next(iter(model.parameters()))
    assert not torch.allclose(first, next(iter(ours.module.parameters())))  # an average, not a copy


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_every_schedule_updates_the_learning_rate_tensor_a_graph_reads(optimizer):
    """On the CUDA-graph path the learning rate is a device tensor the captured update reads; a
    schedule that put a new float (or a new tensor) in its place would leave the graph training at
    the first rate for ever. Every registered schedule must fill the same tensor in place."""
    from mnistlab.training.optim import SCHEDULES, make_optimizer, make_schedule

    for name in SCHEDULES:
        c = cfg(model="fast", optimizer=optimizer, schedule=name, lr=0.01, cuda_graphs=True, epochs=3, gamma=0.5,
                step_size=1)
        model = create_model_for_test()
        opt = make_optimizer(c, model.parameters())
        sched, per_step = make_schedule(c, opt, steps_per_epoch=4)
        for group in opt.param_groups:  # what CudaGraphStep does, after the schedule is built
            group["lr"] = torch.tensor(float(group["lr"]))
        tensor = opt.param_groups[0]["lr"]
        seen = [float(tensor)]
        for _ in range(4 if per_step else 2):
            model(torch.zeros(2, 1, 28, 28)).sum().backward()
            opt.step()
            if sched is not None:
                sched.step()
            assert opt.param_groups[0]["lr"] is tensor, name
            seen.append(float(tensor))
        if name != "none":
            assert len(set(seen)) > 1, f"{name}: the rate never changed ({seen})"


def create_model_for_test():
    from mnistlab.models import create_model

    torch.manual_seed(0)
    return create_model("fast", (1, 28, 28), 10)
