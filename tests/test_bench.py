"""Benchmark suites whose harness can be checked on any machine: the GPU self-check's two comparisons
(with the eager path standing in for the CUDA graph on a CPU), the precision suite's pairing, the shift
suite's rows, and the startup suite's new processes."""

from __future__ import annotations

import pytest
import torch

from mnistlab.bench import SUITES, startup
from mnistlab.bench import gpu as gpu_bench
from mnistlab.bench import precision as precision_bench
from mnistlab.bench import shift as shift_bench


def test_the_gpu_self_check_says_it_ran_nothing_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: `mnistlab bench gpu` runs for real")
    (row,) = SUITES["gpu"]()
    assert row["passed"] is None and "no CUDA device" in row["skipped"]


@pytest.mark.slow
def test_graph_against_eager_compares_accuracy_and_time_per_arm():
    row = gpu_bench.graph_against_eager("fast", [0, 1], device="cpu", graphs=False, train_subset=800,
                                        model_args={"width": 8})
    assert set(row["per_seed"]) == {"eager", "graph"} and [r["seed"] for r in row["per_seed"]["graph"]] == [0, 1]
    # the same path twice: the same accuracy to the bit, so they agree; the speed verdict is a comparison
    assert row["eager_test_acc"] == row["graph_test_acc"] and row["agree"] is True
    assert row["graph_faster"] == (row["graph_train_s"] < row["eager_train_s"])
    assert row["passed"] == (row["agree"] and row["graph_faster"])


def test_the_precision_suite_pairs_both_precisions_per_seed():
    calls = []

    def timed(recipe, seed, **overrides):  # the suite's own arithmetic, on recorded numbers
        calls.append((recipe, seed, overrides["precision"]))
        return {"train_s": 2.0 if overrides["precision"] == "bf16" else 4.0, "test_acc": 0.99, "epochs": 1,
                "precision": overrides["precision"]}

    row = precision_bench.paired("fast", [0, 1, 2], None, train=timed)
    assert [c[2] for c in calls] == ["fp32", "bf16", "bf16", "fp32", "fp32", "bf16"]  # order alternates per seed
    assert row["bf16_over_fp32_mean"] == 0.5 and row["faster"] == "bf16" and len(row["per_seed"]) == 3


@pytest.mark.slow
def test_the_startup_suite_times_new_processes_against_their_floors_and_goals():
    rows = {r["name"]: r for r in SUITES["startup"](quick=True)}
    assert list(rows) == [name for name, _, _ in startup.COMMANDS]
    interpreter, torch_floor = rows["python (the interpreter alone)"], rows["import torch (today's floor)"]
    assert 0 < interpreter["median_s"] < torch_floor["median_s"] and torch_floor["ratio_to_import_torch"] == 1
    for name, _, goal in startup.COMMANDS:
        r = rows[name]
        assert r["runs"] == 2 and r["min_s"] <= r["median_s"] <= r["max_s"] and r["goal_s"] == goal
        assert r["meets_goal"] == (None if goal is None else r["median_s"] <= goal)
    # predict loads the packaged model and answers: more work than the interpreter alone
    assert rows["mnistlab predict picture.png"]["median_s"] > interpreter["median_s"]


def test_the_shift_suite_reads_a_shift_record_into_one_row_per_model():
    assert SUITES["shift"] is shift_bench.bench_shift
    sets = [{"name": "clean", "accuracy": 0.99}, {"name": "fog", "accuracy": 0.5}, {"name": "uci", "accuracy": 0.9}]
    record = {"sets": sets, "clean": 0.99, "corruption_mean": 0.7, "corruption_worst": 0.5,
              "corruption_worst_name": "fog", "seconds": {"total": 12.34}, "epochs": 4, "synthetic": 0,
              "goals": [{"met": True}, {"met": False}]}
    row = shift_bench.row_of("m", record, 5.0)
    assert row["clean"] == 99.0 and row["uci"] == 90.0 and row["thin"] is None  # a set not measured: no figure
    assert row["worst_corruption"] == "fog" and row["goals_met"] == "1/2" and row["shift_s"] == 12.3
