"""`soul-bench reproduce embedded` still writes what is committed in leaderboards/ and reports/
(file names and table columns — not the numbers, which vary by machine)."""

import csv

import pytest

from cli_helpers import run_cli
from repo_paths import REPO

COMMITTED_TABLES = REPO / "leaderboards" / "tofu"
COMMITTED_FIGURES = REPO / "reports" / "tofu"


def header(path):
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


@pytest.mark.slow  # ~3 min: every built-in task's micro sweep; .ci/run runs the slow tier
@pytest.mark.skipif(not COMMITTED_TABLES.is_dir(), reason="no committed reference leaderboard yet")
def test_reproduce_output_format_matches_what_is_committed(tmp_path, capsys):
    tables, figures = tmp_path / "leaderboards", tmp_path / "reports"
    # seeds 0 and 1: TOFU's reference chooses on seed 0 and reports the choice on the others
    code, _, err = run_cli(["reproduce", "embedded", "--preset", "micro", "--seeds", "0,1", "--methods", "ga,npo",
                            "--optimizers", "adamw,sophia", "--leaderboards", tables, "--reports", figures,
                            "--runs", tmp_path / "runs", "--no-progress"], capsys)
    assert code == 0, err
    made_tables = {p.name for p in (tables / "tofu").iterdir()}
    made_figures = {p.name for p in (figures / "tofu").iterdir()}
    assert {"leaderboard.md", "leaderboard.csv", "fo_vs_so.md", "fo_vs_so.csv"} <= made_tables
    assert {"tradeoff.png", "tradeoff.pdf", "leaderboard.tex", "fo_vs_so.tex", "bars.png"} <= made_figures
    # a smaller sweep makes no file the reference sweep does not (e.g. the same curves)
    assert made_tables <= {p.name for p in COMMITTED_TABLES.iterdir()}
    assert made_figures <= {p.name for p in COMMITTED_FIGURES.iterdir()}
    for name in ("leaderboard.csv", "fo_vs_so.csv"):
        assert header(tables / "tofu" / name) == header(COMMITTED_TABLES / name), name


def test_unknown_suite_is_a_user_error(capsys):
    code, _, err = run_cli(["reproduce", "nightly"], capsys)
    assert code == 2 and "unknown reference suite 'nightly'; valid: embedded" in err


@pytest.mark.parametrize("flag", ["--prepare-seeds", "--seeds"])
def test_a_negative_seed_is_refused_before_any_work(capsys, flag):
    code, _, err = run_cli(["reproduce", "--task", "tofu", flag, "0,-1"], capsys)
    assert code == 2 and f"{flag}: seed -1 is out of range; valid: 0 to 4294967295" in err


def test_reference_probes_come_from_the_card_or_the_flag(monkeypatch, capsys):
    """The card's `reference.probes` (here overridden by --probes) reach every run of the sweep;
    an unknown probe is one line and exit 2 before any work."""
    from soul_bench.errors import UserError

    specs = []

    class Recorder:  # stands in for the Runner: keep the spec, stop before any work
        def __init__(self, spec, console, **options):
            specs.append(spec)
            raise UserError("stopped by the test")

    monkeypatch.setattr("soul_bench.runner.Runner", Recorder)
    code, _, err = run_cli(["reproduce", "--task", "tofu", "--probes", "relearn,quant"], capsys)
    assert code == 2 and "stopped by the test" in err
    assert specs[-1].probes == ["relearn", "quant"]
    run_cli(["reproduce", "--task", "tofu"], capsys)
    from soul_bench import registry

    assert specs[-1].probes == registry.load_task("tofu").card.spec.reference.probes
    monkeypatch.undo()
    code, _, err = run_cli(["reproduce", "--task", "tofu", "--probes", "relearn,jailbreak", "--runs", "/nonexistent/x"], capsys)
    assert code == 2 and "unknown probe 'jailbreak'" in err and "Traceback" not in err


def test_every_reference_sweep_tunes_each_optimiser_over_the_same_learning_rates():
    """The committed FO-vs-SO verdicts compare tuned cells (issue 17): every built-in card's reference
    sweep runs AdamW, Sophia and SOUL, each over the same grid of at least three learning rates, and
    the report then picks one per (method, optimiser) by the card's rule."""
    from soul_bench import registry

    cards = [registry.load_task(name).card for name in registry.builtin_task_names()]
    references = {card.name: card.spec.reference for card in cards if card.spec.reference is not None}
    assert {"tofu", "wmdp", "muse", "copyright", "toxicity"} <= set(references)
    for name, reference in references.items():
        assert {"adamw", "sophia", "soul"} <= set(reference.optimizers), name
        lrs = reference.grid.get("lr", [])
        assert len(lrs) >= 3 and len(set(lrs)) == len(lrs), (name, lrs)
        assert max(lrs) / min(lrs) >= 9, (name, lrs)   # a decade at least: under- to over-unlearning


def test_committed_reference_tables_follow_each_cards_seed_protocol():
    """A card's reference and its committed tables agree: with `select_on_seeds` every unlearned
    row reports exactly the held-out seeds (the tables were regenerated after the card changed),
    and the notes say which seeds chose; without it every row has the card's seeds (× its
    embedded targets)."""
    from soul_bench import registry

    for name in registry.builtin_task_names():
        reference = registry.load_task(name).card.spec.reference
        if reference is None:
            continue
        table = REPO / "leaderboards" / name
        with open(table / "leaderboard.csv", newline="") as handle:
            unlearned = [row for row in csv.DictReader(handle) if row["kind"] == "unlearned"]
        held_out = [s for s in reference.seeds if s not in (reference.select_on_seeds or [])]
        pairs = len(held_out) * len(reference.prepare_seeds)  # each (embedded target, seed) is a seed
        assert unlearned and {row["n_seeds"] for row in unlearned} == {str(pairs)}, name
        chosen_on = "Settings chosen on seed"
        for md in ("leaderboard.md", "fo_vs_so.md"):
            assert (chosen_on in (table / md).read_text()) == bool(reference.select_on_seeds), (name, md)
