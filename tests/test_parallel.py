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

import numpy as np
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


def test_deepspeed_is_refused_before_any_work(monkeypatch):
    from soul_bench.errors import UserError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(UserError, match="DeepSpeed is not supported; launch with DDP .*--use_fsdp"):
        Processes.from_environment()


def _train(rank: int, world: int, store: str, tokenizer_dir: str, optimizer_name: str, out: str,
           sharded: bool = False, sharding=None, checkpointing: bool = False) -> None:
    """One process of a data-parallel run (or the single process when world == 1): 3 steps of
    gradient ascent from a fixed tiny model; writes its final weights (FSDP: the main process
    writes the gathered full weights)."""
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
    processes = Processes(rank=rank, world_size=world, device=torch.device("cpu"), sharded=sharded,
                          **({"sharding": sharding} if sharding else {}))
    model = processes.shard(build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0))
    hparams = {"sgd": {"lr": 0.05}, "adamw": {"lr": 1e-3}}.get(optimizer_name, {"lr": 1e-3, "rho": 0.04, "hessian_interval": 1})
    optimizer = build_optimizer(optimizer_name, model.parameters(), **hparams)
    settings = LoopSettings(steps=3, batch_size=4, max_grad_norm=1.0, warmup_ratio=0.0, schedule="constant", seed=5,
                            gradient_checkpointing=checkpointing)
    result = run_loop(model, GradientAscent(), optimizer, encoded, settings, tokenizer.pad_token_id,
                      show_progress=False, processes=processes)
    weights = processes.gather_weights(model) if sharded else model.state_dict()
    if weights is not None:
        torch.save({"weights": weights, "losses": [e["loss"] for e in result.log],
                    "state_numel": [sum(v.to_local().numel() if hasattr(v, "to_local") else v.numel()
                                        for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
                                    for state in optimizer.state.values()]}, f"{out}.{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


def _spawned(world: int, optimizer_name: str, tmp_path: Path, tokenizer_dir: str, sharded: bool = False,
             sharding=None, checkpointing: bool = False) -> list[dict]:
    variant = f"{'fsdp' if sharded else 'ddp'}{'-options' if sharding or checkpointing else ''}"
    out = str(tmp_path / f"{optimizer_name}-{world}-{variant}")
    if world == 1:
        _train(0, 1, "", tokenizer_dir, optimizer_name, out)
    else:
        store = str(tmp_path / f"store-{optimizer_name}-{variant}")
        torch.multiprocessing.spawn(_train, args=(world, store, tokenizer_dir, optimizer_name, out, sharded, sharding,
                                                  checkpointing), nprocs=world)
    return [torch.load(f"{out}.{rank}.pt") for rank in range(world if not sharded else 1)]


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


# answers of many lengths: the passes sort by length, so each process's share is a mix
PAIRS = [(f"What is written on page {i}?", " ".join(["word"] * (1 + 3 * i % 7)) + ".") for i in range(11)]


def _evaluate(rank: int, world: int, store: str, tokenizer_dir: str, out: str) -> None:
    """One process of an evaluation shared among ``world`` processes (soul_bench.evaluate.sharing):
    likelihoods with token statistics, greedy answers and GradNorm (batched and per item) of one
    tiny model; saves what this process got and how many forward passes it ran for each."""
    from transformers import PreTrainedTokenizerFast

    from soul_bench.data import PromptFormat
    from soul_bench.evaluate.likelihood import answer_nll, generate_answers
    from soul_bench.evaluate.mia import gradnorm_scores
    from soul_bench.evaluate.sharing import shared_among
    from soul_bench.models import build_tiny_llama

    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0)
    forwards = [0]
    model.model.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    fmt, results, counts = PromptFormat(), {}, {}

    def counted(name, compute):
        before = forwards[0]
        results[name] = compute()
        counts[name] = forwards[0] - before

    with shared_among(rank, world):
        counted("nll", lambda: answer_nll(model, tokenizer, fmt, PAIRS, batch_size=2, keep_token_stats=[0, 3, 4, 9]))
        counted("answers", lambda: generate_answers(model, tokenizer, fmt, [q for q, _ in PAIRS], max_new_tokens=4,
                                                    batch_size=3))
        counted("gradnorm", lambda: gradnorm_scores(model, tokenizer, fmt, PAIRS, gradnorm_batch_size=2))
        counted("gradnorm_per_item", lambda: gradnorm_scores(model, tokenizer, fmt, PAIRS, gradnorm_batch_size=1))
    torch.save({"results": results, "forwards": counts}, f"{out}.{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


def test_an_evaluation_shared_by_two_processes_gives_one_processs_numbers_at_half_the_passes(tmp_path, tokenizer_dir):
    out = str(tmp_path / "evaluation")
    _evaluate(0, 1, "", tokenizer_dir, f"{out}-one")
    torch.multiprocessing.spawn(_evaluate, args=(2, str(tmp_path / "store-evaluation"), tokenizer_dir, f"{out}-two"),
                                nprocs=2)
    one = torch.load(f"{out}-one.0.pt", weights_only=False)
    two = [torch.load(f"{out}-two.{rank}.pt", weights_only=False) for rank in range(2)]
    for shared in two:  # every process gets every item's numbers, the ones one process computes
        nll, expected = shared["results"]["nll"], one["results"]["nll"]
        for key in ("sum_nll", "n_tokens", "avg_nll"):
            np.testing.assert_allclose(nll[key], expected[key], rtol=1e-6)
        for key in ("token_logprobs", "token_mu", "argmax_match", "token_is_eos"):
            for item in range(len(PAIRS)):
                if item in (0, 3, 4, 9):
                    np.testing.assert_allclose(nll[key][item], expected[key][item], rtol=1e-6)
                else:
                    assert nll[key][item] is None
        assert shared["results"]["answers"] == one["results"]["answers"]
        np.testing.assert_allclose(shared["results"]["gradnorm"], one["results"]["gradnorm"], rtol=1e-5)
        np.testing.assert_allclose(shared["results"]["gradnorm_per_item"], one["results"]["gradnorm_per_item"], rtol=1e-5)
        np.testing.assert_allclose(shared["results"]["gradnorm"], shared["results"]["gradnorm_per_item"], rtol=1e-4)
    # each process ran its share of the batches: 11 items in 6 likelihood batches (3 + 3), 4
    # generation batches (2 + 2, each a forward per new token), 6 GradNorm batches (3 + 3, and in
    # each process one forward that finds the parameters the loss reaches), 11 single items (6 + 5)
    counts = [shared["forwards"] for shared in two]
    assert [c["nll"] for c in counts] == [3, 3] and one["forwards"]["nll"] == 6
    assert sum(c["answers"] for c in counts) == one["forwards"]["answers"] and min(c["answers"] for c in counts) > 0
    assert [c["gradnorm"] for c in counts] == [4, 4] and one["forwards"]["gradnorm"] == 7
    assert [c["gradnorm_per_item"] for c in counts] == [6, 5] and one["forwards"]["gradnorm_per_item"] == 11


def _broadcast(rank: int, world: int, store: str, tokenizer_dir: str, out: str) -> None:
    """Each process builds the model from its own seed, then takes the main process's weights."""
    from transformers import PreTrainedTokenizerFast

    from soul_bench.models import build_tiny_llama

    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=rank)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    Processes(rank=rank, world_size=world, device=torch.device("cpu")).broadcast_weights(model)
    torch.save({"before": before, "after": model.state_dict()}, f"{out}.{rank}.pt")
    torch.distributed.destroy_process_group()


def test_broadcast_weights_gives_every_process_the_main_processs_weights(tmp_path, tokenizer_dir):
    """What FSDP's followers evaluate: their own copy of the target, made the main process's."""
    out = str(tmp_path / "broadcast")
    torch.multiprocessing.spawn(_broadcast, args=(2, str(tmp_path / "store-broadcast"), tokenizer_dir, out), nprocs=2)
    main, follower = (torch.load(f"{out}.{rank}.pt") for rank in range(2))
    assert not torch.equal(main["before"]["model.layers.0.mlp.up_proj.weight"],
                           follower["before"]["model.layers.0.mlp.up_proj.weight"])
    for name, value in main["before"].items():
        assert torch.equal(main["after"][name], value), name
        assert torch.equal(follower["after"][name], value), name


def _harness(rank: int, world: int, store: str, model_dir: str, out: str) -> None:
    """One process of an lm-eval run shared among ``world`` processes: the TOFU card's local
    multiple-choice task on a saved tiny model; saves what this process got and its forward passes."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from soul_bench.evaluate.harness import run_harness
    from soul_bench.evaluate.sharing import shared_among

    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    forwards = [0]
    model.model.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    with shared_among(rank, world):
        metrics, details = run_harness(model, tokenizer, ["tofu_mc"], include_dirs=[HARNESS_DIR], limit=9, batch_size=4)
    torch.save({"metrics": metrics, "n_samples": details.get("n_samples"), "forwards": forwards[0]}, f"{out}.{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


HARNESS_DIR = Path(__file__).resolve().parents[1] / "tasks" / "tofu" / "harness"


def test_an_lm_eval_task_shared_by_two_processes_gives_one_processs_metrics(tmp_path):
    pytest.importorskip("lm_eval")
    from soul_bench.models import build_tiny_llama, train_tokenizer
    from soul_bench.task import load_sibling

    rows = load_sibling(str(HARNESS_DIR / "make_data.py"), "make_data").make_rows()
    tokenizer = train_tokenizer([f"Question: {r['question']}\nAnswer: {c}" for r in rows for c in r["choices"]], 300)
    model_dir = tmp_path / "model"
    build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = str(tmp_path / "harness")
    _harness(0, 1, "", str(model_dir), f"{out}-one")
    torch.multiprocessing.spawn(_harness, args=(2, str(tmp_path / "store-harness"), str(model_dir), f"{out}-two"),
                                nprocs=2)
    one = torch.load(f"{out}-one.0.pt", weights_only=False)
    main, follower = (torch.load(f"{out}-two.{rank}.pt", weights_only=False) for rank in range(2))
    assert one["metrics"]["harness/tofu_mc/acc"] is not None and one["n_samples"]["tofu_mc"]["effective"] == 9
    assert main["metrics"].keys() == one["metrics"].keys()
    assert main["metrics"] == pytest.approx(one["metrics"], rel=1e-6)  # the same 9 documents' scores
    assert main["n_samples"] == one["n_samples"]
    assert follower["metrics"] == {}  # process 0 alone gets the results
    # each process scored its share of the documents (lm-eval pads the shorter share with one)
    assert 0 < main["forwards"] < one["forwards"] and 0 < follower["forwards"] < one["forwards"]


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_fsdp_trains_the_weights_one_process_trains_with_sharded_optimiser_state(tmp_path, tokenizer_dir, optimizer_name):
    one = _spawned(1, optimizer_name, tmp_path, tokenizer_dir)[0]
    sharded = _spawned(2, optimizer_name, tmp_path, tokenizer_dir, sharded=True)[0]  # the main process's gathered copy
    assert set(sharded["weights"]) == set(one["weights"])
    for name, value in one["weights"].items():
        torch.testing.assert_close(sharded["weights"][name], value, rtol=1e-5, atol=1e-6)
    assert sharded["losses"] == pytest.approx(one["losses"], rel=1e-5)
    if optimizer_name == "adamw":  # each process holds half of every moment (m, v): sharded with the weights
        assert sum(sharded["state_numel"]) == pytest.approx(sum(one["state_numel"]) / 2, rel=0.05)


def test_fsdp_zero2_with_activation_checkpointing_trains_the_weights_one_process_trains(tmp_path, tokenizer_dir):
    """accelerate's --fsdp_sharding_strategy SHARD_GRAD_OP (layers keep their gathered weights from
    forward to backward), --fsdp_transformer_layer_cls_to_wrap and --fsdp_activation_checkpointing,
    as sharding_options reads them: the same training as one process."""
    from soul_bench.engine.parallel import sharding_options

    options = sharding_options({"FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP", "FSDP_ACTIVATION_CHECKPOINTING": "true",
                                "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer"})
    assert options.reshard_after_forward is False and options.activation_checkpointing
    one = _spawned(1, "adamw", tmp_path, tokenizer_dir)[0]
    zero2 = _spawned(2, "adamw", tmp_path, tokenizer_dir, sharded=True, sharding=options, checkpointing=True)[0]
    for name, value in one["weights"].items():
        torch.testing.assert_close(zero2["weights"][name], value, rtol=1e-5, atol=1e-6)
    assert zero2["losses"] == pytest.approx(one["losses"], rel=1e-5)


def test_accelerates_fsdp_options_are_honoured_or_refused_in_one_line():
    """Every FSDP option accelerate launch passes (FSDP_* variables) maps onto fully_shard or is
    refused before any work — never silently dropped."""
    from soul_bench.engine.parallel import ShardingOptions, sharding_options
    from soul_bench.errors import UserError

    # what `accelerate launch --use_fsdp` passes with no other option: FSDP2's defaults
    defaults = {"FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "FULL_SHARD", "FSDP_RESHARD_AFTER_FORWARD": "true",
                "FSDP_OFFLOAD_PARAMS": "false", "FSDP_MIN_NUM_PARAMS": "100000000", "FSDP_FORWARD_PREFETCH": "false",
                "FSDP_USE_ORIG_PARAMS": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true", "FSDP_SYNC_MODULE_STATES": "true",
                "FSDP_ACTIVATION_CHECKPOINTING": "false", "FSDP_ACTIVATION_CHECKPOINTING_OFFLOAD": "false"}
    assert sharding_options(defaults) == ShardingOptions() == sharding_options({})
    assert sharding_options({**defaults, "FSDP_SHARDING_STRATEGY": "2"}).reshard_after_forward is False
    assert sharding_options({**defaults, "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "false"}).reshard_after_forward is False
    assert sharding_options({**defaults, "FSDP_AUTO_WRAP_POLICY": "NO_WRAP"}).wrap_classes == ()
    assert sharding_options({**defaults, "FSDP_TRANSFORMER_CLS_TO_WRAP": "A, B"}).wrap_classes == ("A", "B")
    for change, message in (({"FSDP_SHARDING_STRATEGY": "NO_SHARD"}, "NO_SHARD: that is data parallelism: launch with --multi_gpu"),
                            ({"FSDP_SHARDING_STRATEGY": "4"}, "HYBRID_SHARD: sharding within a node"),
                            ({"FSDP_SHARDING_STRATEGY": "ZERO9"}, "unknown FSDP sharding strategy 'ZERO9'; valid: FULL_SHARD"),
                            ({"FSDP_OFFLOAD_PARAMS": "true"}, "--fsdp_offload_params true: CPU offload under FSDP is not supported"),
                            ({"FSDP_ACTIVATION_CHECKPOINTING_OFFLOAD": "true"}, "--fsdp_activation_checkpointing_offload true"),
                            ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "auto-wrap policy 'SIZE_BASED_WRAP' is not supported"),
                            ({"FSDP_RESHARD_AFTER_FORWARD": "maybe"}, "FSDP_RESHARD_AFTER_FORWARD='maybe'.*expected true or false")):
        with pytest.raises(UserError, match=message):
            sharding_options({**defaults, **change})


def test_shard_wraps_the_layers_the_options_name(monkeypatch, tokenizer_dir):
    """Processes.shard gives each wrapped layer class accelerate's reshard choice (the root keeps
    FSDP2's own), NO_WRAP shards the root alone, and a class the model lacks is one line."""
    import torch.distributed.device_mesh
    import torch.distributed.fsdp
    from transformers import PreTrainedTokenizerFast

    from soul_bench.engine.parallel import ShardingOptions
    from soul_bench.errors import UserError
    from soul_bench.models import build_tiny_llama

    calls = []
    monkeypatch.setattr(torch.distributed.device_mesh, "init_device_mesh", lambda *args, **kwargs: "mesh")
    monkeypatch.setattr(torch.distributed.fsdp, "fully_shard",
                        lambda module, **kwargs: calls.append((type(module).__name__, kwargs.get("reshard_after_forward"))))
    model = build_tiny_llama(PreTrainedTokenizerFast.from_pretrained(tokenizer_dir), hidden_size=32, layers=2, heads=2)

    def shard(**options):
        calls.clear()
        Processes(rank=0, world_size=2, sharded=True, sharding=ShardingOptions(**options)).shard(model)
        return list(calls)

    root = ("LlamaForCausalLM", None)
    assert shard() == [("LlamaDecoderLayer", True)] * 2 + [root]
    assert shard(reshard_after_forward=False) == [("LlamaDecoderLayer", False)] * 2 + [root]
    assert shard(wrap_classes=("LlamaMLP",), reshard_after_forward=False) == [("LlamaMLP", False)] * 2 + [root]
    assert shard(wrap_classes=()) == [root]
    with pytest.raises(UserError, match="GPT2Block: the model has no module of that class; its decoder layers: LlamaDecoderLayer"):
        shard(wrap_classes=("GPT2Block",))


def test_sophia_averages_its_hessian_estimate_over_processes(tmp_path, tokenizer_dir):
    """Every process estimates h on its own rows (and draws its own GNB labels); without the
    average the replicas' h — and so their weights — would drift apart after the first step."""
    two = _spawned(2, "sophia", tmp_path, tokenizer_dir)
    for name, value in two[0]["weights"].items():
        assert torch.equal(two[1]["weights"][name], value), f"replicas differ in {name}"
    assert two[0]["losses"][-1] < two[0]["losses"][0]  # gradient ascent: the NLL rises, the loss (−NLL) falls
    # FSDP makes the same global-batch estimate (gradients reduce-scattered, then squared) with h
    # sharded: the same weights as DDP
    sharded = _spawned(2, "sophia", tmp_path, tokenizer_dir, sharded=True)[0]
    for name, value in two[0]["weights"].items():
        torch.testing.assert_close(sharded["weights"][name], value, rtol=1e-4, atol=1e-6)
    assert sum(sharded["state_numel"]) == pytest.approx(sum(two[0]["state_numel"]) / 2, rel=0.05)


MICRO = ["run", "--preset", "micro", "--methods", "ga,npo", "--optimizers", "adamw,sophia", "--steps", "3",
         "--batch-size", "4", "--harness-limit", "6", "--probes", "quant,relearn", "--no-progress"]


@pytest.fixture(scope="module")
def one_process_sweep(tmp_path_factory):
    one = tmp_path_factory.mktemp("one")
    run = subprocess.run([sys.executable, "-m", "soul_bench.cli", *MICRO, "--out", str(one)],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return one


@pytest.mark.slow  # a sweep under `accelerate launch` with 2 processes, each way (~40 s), + one in 1 process
@pytest.mark.parametrize("engine", ["--multi_gpu", "--use_fsdp"])
def test_accelerate_launch_with_two_processes_equals_one_process(tmp_path, one_process_sweep, engine):
    """The CLI as a user starts it on 2 CPU processes (gloo), DDP or FSDP: one set of records,
    written by the main process, equal to one process's within the float tolerance of a split
    token mean. Both processes evaluate every model (under FSDP a whole copy each), each its share
    of the batches: a process left out of a pass would leave the other waiting in its gather."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = one_process_sweep, tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", engine, "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    # --fresh-baselines: evaluate under two processes, not reuse the one-process evaluation
    run = subprocess.run([*launch, "-m", "soul_bench.cli", *MICRO, "--out", str(two), "--fresh-baselines"], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-8000:]  # the launcher's summary alone hides a process's own error
    assert run.stdout.count("cell 1/4") == 1  # only the main process prints
    records = lambda folder: {p.name: json.loads(p.read_text()) for p in (folder / "records").glob("*.json")}  # noqa: E731
    ones, twos = records(one), records(two)
    assert set(ones) == set(twos) and len(ones) == 6  # 2 baselines + 4 cells, the same cell ids
    for name, record in twos.items():
        assert record["status"] == "ok" and record["environment"]["processes"] == 2
        reference = ones[name]
        if record["kind"] != "unlearned":
            # the same models, evaluated by both processes together: the same numbers, but for the
            # order in which lm-eval averages its documents' scores
            assert record["metrics"].keys() == reference["metrics"].keys()
            assert "harness/tofu_mc/acc" in record["metrics"]
            assert ("quant/forget/prob" in record["metrics"]) == (record["kind"] == "target")
            for key, value in record["metrics"].items():
                assert value == (pytest.approx(reference["metrics"][key], rel=1e-12) if value is not None else None), key
            continue
        losses = [e["loss"] for e in record["train_log"]]
        expected = [e["loss"] for e in reference["train_log"]]
        # NPO's loss is a mean over sequences: the split is exact; GA's token mean, and Sophia's
        # sampled GNB labels, differ by a little
        tight = record["method"] == "npo" and record["optimizer"] == "adamw"
        assert losses == pytest.approx(expected, rel=1e-5 if tight else 1e-2)
        for key in ("forget/prob", "forget/truth_ratio", "retain/prob", "quant/forget/prob", "relearn/forget/prob"):
            assert record["metrics"][key] == pytest.approx(reference["metrics"][key], rel=1e-4 if tight else 1e-2)


def test_fsdp_refuses_what_it_cannot_train_before_any_work(monkeypatch, tmp_path, capsys):
    """Under FSDP: LoRA adapters and Hutchinson's Hessian-vector products (double backward) are
    one line, exit 2, nothing written — found from the settings, before the processes start work."""
    from cli_helpers import run_cli

    monkeypatch.setattr(Processes, "from_environment",
                        classmethod(lambda cls, cpu=False: cls(rank=0, world_size=2, device=torch.device("cpu"), sharded=True)))
    code, _, err = run_cli(["run", "--preset", "micro", "--methods", "ga", "--optimizers", "adamw,sophia-h",
                            "--out", tmp_path / "out"], capsys)
    assert code == 2 and "optimizer 'sophia-h' needs Hessian-vector products" in err and "Traceback" not in err
    config = tmp_path / "lora.yaml"
    config.write_text("lora: {r: 4}\n")
    code, _, err = run_cli(["run", "--preset", "micro", "--methods", "ga", "--optimizers", "adamw", "--config", config,
                            "--out", tmp_path / "out"], capsys)
    assert code == 2 and "LoRA adapters are not trained under FSDP yet" in err
    assert not (tmp_path / "out").exists()


def test_a_default_loop_setting_added_later_keeps_earlier_cell_ids():
    """Records name their loop settings; a setting added later (group_by_length) is left out at
    the value that reproduces earlier runs, so their cell ids and tuning settings stay the same."""
    from soul_bench.engine.loop import LoopSettings
    from soul_bench.runner import loop_identity

    assert "group_by_length" not in loop_identity(LoopSettings())
    assert loop_identity(LoopSettings(group_by_length=True))["group_by_length"] is True


def test_fsdp_activation_checkpointing_is_the_loops_own(monkeypatch, tmp_path):
    """accelerate's --fsdp_activation_checkpointing turns on every cell's activation checkpointing
    (a config's explicit false stays false)."""
    from soul_bench.engine.parallel import ShardingOptions
    from soul_bench.runner import Runner, cell_settings
    from soul_bench.spec import build_spec

    monkeypatch.setattr(Processes, "from_environment", classmethod(lambda cls, cpu=False: cls(
        rank=0, world_size=2, device=torch.device("cpu"), sharded=True, sharding=ShardingOptions(activation_checkpointing=True))))
    settings = {"preset": "micro", "methods": ["ga"], "optimizers": ["adamw"], "out": tmp_path / "out"}
    runner = Runner(build_spec(None, dict(settings)))
    assert cell_settings(runner.task, runner.spec, "ga", "adamw", 0)[0].gradient_checkpointing is True
    config = tmp_path / "off.yaml"
    config.write_text("unlearning: {gradient_checkpointing: false}\n")
    runner = Runner(build_spec(config, dict(settings)))
    assert cell_settings(runner.task, runner.spec, "ga", "adamw", 0)[0].gradient_checkpointing is False
