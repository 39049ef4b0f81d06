"""Data parallelism (soul_bench.engine.parallel): N processes train one cell as one process would.

The in-process tests start 2 gloo processes with torch.multiprocessing on a tiny model whose
answers all have one length (so a token mean is a sequence mean and the split is exact); the
slow test runs the CLI under `accelerate launch` and compares its records with one process's.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from soul_bench.engine.parallel import Processes

QUESTIONS = [f"What colour is box number {i}?" for i in range(8)]
ROWS = [{"question": q, "answer": "It is painted a deep shade of blue."} for q in QUESTIONS]  # equal answer lengths


def test_each_process_gets_every_nth_row_and_a_weight_that_sums_to_the_batch():
    picks = [10, 11, 12, 13, 14]
    shares = [Processes(rank=r, world_size=2).share(picks) for r in range(2)]
    assert shares[0] == ([10, 12, 14], pytest.approx(2 * 3 / 5)) and shares[1] == ([11, 13], pytest.approx(2 * 2 / 5))
    # DDP averages over 2 processes: (w0·L0 + w1·L1)/2 = (3·L0 + 2·L1)/5, the 5 rows' mean
    assert sum(weight for _, weight in shares) / 2 == pytest.approx(1.0)
    # a batch shorter than the process count: the process without rows still runs, with weight 0
    assert Processes(rank=3, world_size=4).share([7, 8]) == ([7], 0.0)
    assert Processes().share(picks) == (picks, 1.0)


def test_one_process_adds_nothing():
    one = Processes()
    model = torch.nn.Linear(2, 2)
    value = torch.tensor(3.0)
    assert one.wrap(model) is model and one.mean(value) is value and one.agree(True) is True
    tensors = [torch.ones(2), None]
    one.average_(tensors)
    assert torch.equal(tensors[0], torch.ones(2))
    one.send("ignored")  # no collective to wait on


@pytest.mark.parametrize("variable, engine", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_an_engine_not_supported_yet_is_refused_before_any_work(monkeypatch, variable, engine):
    from soul_bench.errors import UserError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(variable, "true")
    with pytest.raises(UserError, match=f"{engine} is not supported yet.*--multi_gpu"):
        Processes.from_environment()


def _train(rank: int, world: int, store: str, tokenizer_dir: str, optimizer_name: str, out: str) -> None:
    """One process of a data-parallel run (or the single process when world == 1): 3 steps of
    gradient ascent from a fixed tiny model; writes its final weights."""
    from transformers import PreTrainedTokenizerFast

    from soul_bench.data import PromptFormat, encode_examples
    from soul_bench.engine.loop import LoopSettings, run_loop
    from soul_bench.engine.methods import GradientAscent
    from soul_bench.engine.optimizers import build_optimizer
    from soul_bench.models import build_tiny_llama

    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    encoded = encode_examples(tokenizer, PromptFormat(), ROWS)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0)
    hparams = {"lr": 0.05} if optimizer_name == "sgd" else {"lr": 1e-3, "rho": 0.04, "hessian_interval": 1}
    optimizer = build_optimizer(optimizer_name, model.parameters(), **hparams)
    settings = LoopSettings(steps=3, batch_size=4, max_grad_norm=None, warmup_ratio=0.0, schedule="constant", seed=5)
    result = run_loop(model, GradientAscent(), optimizer, encoded, settings, tokenizer.pad_token_id,
                      show_progress=False, processes=Processes(rank=rank, world_size=world))
    torch.save({"weights": model.state_dict(), "losses": [e["loss"] for e in result.log]}, f"{out}.{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


def _spawned(world: int, optimizer_name: str, tmp_path: Path, tokenizer_dir: str) -> list[dict]:
    out = str(tmp_path / f"{optimizer_name}-{world}")
    if world == 1:
        _train(0, 1, "", tokenizer_dir, optimizer_name, out)
    else:
        store = str(tmp_path / f"store-{optimizer_name}")
        torch.multiprocessing.spawn(_train, args=(world, store, tokenizer_dir, optimizer_name, out), nprocs=world)
    return [torch.load(f"{out}.{rank}.pt") for rank in range(world)]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from soul_bench.models import train_tokenizer

    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([r["question"] + " " + r["answer"] for r in ROWS] * 3, 300).save_pretrained(path)
    return str(path)


def test_two_processes_train_the_weights_one_process_trains(tmp_path, tokenizer_dir):
    one = _spawned(1, "sgd", tmp_path, tokenizer_dir)[0]
    two = _spawned(2, "sgd", tmp_path, tokenizer_dir)
    for name, value in one["weights"].items():
        assert torch.equal(two[0]["weights"][name], two[1]["weights"][name]), f"replicas differ in {name}"
        torch.testing.assert_close(two[0]["weights"][name], value, rtol=1e-5, atol=1e-6)
    # the logged loss is the global batch's (both processes log the same), equal to one process's
    assert two[0]["losses"] == two[1]["losses"]
    assert two[0]["losses"] == pytest.approx(one["losses"], rel=1e-5)


def test_sophia_averages_its_hessian_estimate_over_processes(tmp_path, tokenizer_dir):
    """Every process estimates h on its own rows (and draws its own GNB labels); without the
    average the replicas' h — and so their weights — would drift apart after the first step."""
    two = _spawned(2, "sophia", tmp_path, tokenizer_dir)
    for name, value in two[0]["weights"].items():
        assert torch.equal(two[1]["weights"][name], value), f"replicas differ in {name}"
    assert two[0]["losses"][-1] < two[0]["losses"][0]  # gradient ascent: the NLL rises, the loss (−NLL) falls


MICRO = ["run", "--preset", "micro", "--methods", "ga,npo", "--optimizers", "adamw,sophia", "--steps", "3",
         "--batch-size", "4", "--harness-tasks", "", "--no-progress"]


@pytest.mark.slow  # one sweep in 1 process and one under `accelerate launch` with 2 (~1 min)
def test_accelerate_launch_with_two_processes_equals_one_process(tmp_path):
    """The CLI as a user starts it on 2 CPU processes (gloo): one set of records, written by the
    main process, equal to one process's within the float tolerance of a split token mean."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    run = subprocess.run([sys.executable, "-m", "soul_bench.cli", *MICRO, "--out", str(one)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    run = subprocess.run([*launch, "-m", "soul_bench.cli", *MICRO, "--out", str(two)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("cell 1/4") == 1  # only the main process prints
    records = lambda folder: {p.name: json.loads(p.read_text()) for p in (folder / "records").glob("*.json")}  # noqa: E731
    ones, twos = records(one), records(two)
    assert set(ones) == set(twos) and len(ones) == 6  # 2 baselines + 4 cells, the same cell ids
    for name, record in twos.items():
        assert record["status"] == "ok" and record["environment"]["processes"] == 2
        reference = ones[name]
        if record["kind"] != "unlearned":
            assert record["metrics"] == reference["metrics"]  # the main process evaluates the same models
            continue
        losses = [e["loss"] for e in record["train_log"]]
        expected = [e["loss"] for e in reference["train_log"]]
        # NPO's loss is a mean over sequences: the split is exact; GA's token mean, and Sophia's
        # sampled GNB labels, differ by a little
        tight = record["method"] == "npo" and record["optimizer"] == "adamw"
        assert losses == pytest.approx(expected, rel=1e-5 if tight else 1e-2)
        for key in ("forget/prob", "forget/truth_ratio", "retain/prob"):
            assert record["metrics"][key] == pytest.approx(reference["metrics"][key], rel=1e-4 if tight else 1e-2)
