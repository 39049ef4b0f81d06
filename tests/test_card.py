"""The typed task card: typos and bad values fail at load in one line naming the file and key."""

import json
from pathlib import Path

import pytest
import yaml

from cli_helpers import run_cli
from soul_bench.card import CardSpec, MetricSpec, parse_card
from soul_bench.errors import ModelCheckError, UserError
from soul_bench.registry import load_task

REPO = Path(__file__).resolve().parents[1]
TOFU_CARD = yaml.safe_load((REPO / "tasks" / "tofu" / "task.yaml").read_text())


def card_with(**changes) -> dict:
    card = json.loads(json.dumps(TOFU_CARD))
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = card
        for key in path:
            node = node[key]
        node[last] = value
    return card


@pytest.mark.parametrize("changes, message", [
    ({"rank_bye": ["forget_quality"]}, "unknown key 'rank_bye'; valid keys: name, description"),
    ({"mia__incude_eos": True}, "unknown key 'mia.incude_eos'"),
    ({"mia__include_eos": "yes"}, "'mia.include_eos'"),
    ({"mia__k": 1.5}, "'mia.k'"),
    ({"rank_by": ["forget_qualty"]}, "unknown metric 'forget_qualty'"),
    ({"tradeoff": ["model_utility", "nope"]}, "unknown metric 'nope'"),
    ({"metrics": [{"name": "a", "direction": "up"}]}, "'metrics.0.direction'"),
    ({"metrics": [{"name": "a"}]}, "needs either direction (higher / lower) or ideal"),
    ({"metrics": [{"name": "a", "direction": "higher", "ideal": 0.5}]}, "not both"),
    ({"examples": {"shape": "table"}}, "'examples.shape'"),
    ({"embedded__stages__target__init": "nowhere"}, "starts from unknown stage 'nowhere'"),
    ({"embedded__default_preset": "huge"}, "default_preset 'huge' is not among the presets"),
    ({"embedded__checks": [{"metric": "forget/rouge"}]}, "needs at_least and/or at_most"),
    ({"baselines": {"retain": {"stage": "retain"}}}, "baselines must declare 'target'"),
])
def test_bad_cards_fail_in_one_line_naming_file_and_key(changes, message):
    with pytest.raises(UserError) as err:
        parse_card(card_with(**changes), "tasks/x/task.yaml")
    text = str(err.value)
    assert text.startswith("task card tasks/x/task.yaml") and message in text and "\n" not in text


def test_task_owned_sections_are_typed_by_the_task(tmp_path):
    import shutil

    folder = tmp_path / "tofu2"
    shutil.copytree(REPO / "tasks" / "tofu", folder)
    card = card_with(name="tofu2", evaluation__truth_ratio_mean="harmonic")
    (folder / "task.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(UserError, match=r"'evaluation.truth_ratio_mean'"):
        load_task("tofu2", [tmp_path])
    card = card_with(name="tofu2", evaluation__max_itmes=3)
    (folder / "task.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(UserError, match=r"unknown key 'evaluation.max_itmes'; valid keys: truth_ratio_mean"):
        load_task("tofu2", [tmp_path])


def test_cli_reports_a_bad_card_with_exit_code_2(tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "task.yaml").write_text("name: broken\nmetrics: [{name: a, direction: sideways}]\n")
    (folder / "task.py").write_text("def load(card):\n    raise AssertionError\n")
    code, _, err = run_cli(["run", "--task", "broken", "--tasks-dir", tmp_path, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "metrics.0.direction" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_metric_arrow_and_ranking_defaults():
    assert MetricSpec(name="auc", ideal=0.5).arrow == "→0.5"
    assert MetricSpec(name="u", direction="higher").arrow == "↑"
    spec = CardSpec(name="t", metrics=[{"name": "a", "direction": "higher", "headline": True},
                                       {"name": "b", "ideal": 0.0}])
    assert spec.ranking.by == ["a"] and spec.ranking.require == []
    assert set(spec.baselines) == {"target", "retain"}


def test_the_shipped_cards_are_valid():
    for name in ("tofu", "wmdp"):
        task = load_task(name)
        assert task.card.spec.embedded is not None and task.card.metrics


def test_checks_compare_models_and_name_the_failure():
    from soul_bench.card import CheckSpec

    task = load_task("tofu")
    checks = [CheckSpec(metric="forget/rouge", at_least=0.9, why="memorise"),
              CheckSpec(metric="forget/rouge", minus="retain", at_least=0.15, why="leak")]
    task.check_models({"target": {"forget/rouge": 0.95}, "retain": {"forget/rouge": 0.5}}, checks)
    with pytest.raises(ModelCheckError, match=r"forget/rouge of the target model is 0.850 < 0.9: memorise"):
        task.check_models({"target": {"forget/rouge": 0.85}, "retain": {"forget/rouge": 0.5}}, checks)
    with pytest.raises(ModelCheckError, match=r"minus the retain model's is 0.100 < 0.15: leak"):
        task.check_models({"target": {"forget/rouge": 0.95}, "retain": {"forget/rouge": 0.85}}, checks)
    with pytest.raises(UserError, match="names model 'retain'"):
        task.check_models({"target": {"forget/rouge": 0.95}}, checks)


def test_checks_take_bands_and_metric_patterns():
    from soul_bench.card import CheckSpec

    task = load_task("tofu")
    band = [CheckSpec(metric="mia/*_auc", model="retain", at_least=0.4, at_most=0.6, why="exchangeable"),
            CheckSpec(metric="forget_quality", at_most=1e-5, why="range")]
    fine = {"target": {"forget_quality": 1e-7}, "retain": {"mia/loss_auc": 0.45, "mia/zlib_auc": 0.55, "mia/privleak": 3.0}}
    task.check_models(fine, band)
    with pytest.raises(ModelCheckError, match=r"mia/zlib_auc of the retain model is 0.700 > 0.6: exchangeable"):
        task.check_models({**fine, "retain": {"mia/loss_auc": 0.45, "mia/zlib_auc": 0.7}}, band)
    with pytest.raises(ModelCheckError, match=r"forget_quality of the target model is 0.0003 > 1e-05: range"):
        task.check_models({**fine, "target": {"forget_quality": 3e-4}}, band)
    task.check_models({**fine, "retain": {}}, band)  # a run without those metrics (e.g. no harness): nothing to check
    with pytest.raises(Exception, match="at_least 0.6 > at_most 0.4"):
        CheckSpec(metric="x", at_least=0.6, at_most=0.4)


def test_one_check_can_hold_several_models_to_a_band():
    from soul_bench.card import CheckSpec

    task = load_task("wmdp")
    both = [CheckSpec(metric="general/acc", model=["target", "retain"], at_least=0.3, at_most=0.95, why="headroom")]
    task.check_models({"target": {"general/acc": 0.8}, "retain": {"general/acc": 0.7}}, both)
    with pytest.raises(ModelCheckError, match=r"general/acc of the retain model is 0.980 > 0.95: headroom"):
        task.check_models({"target": {"general/acc": 0.8}, "retain": {"general/acc": 0.98}}, both)
    with pytest.raises(ModelCheckError, match=r"general/acc of the target model is 0.200 < 0.3: headroom"):
        task.check_models({"target": {"general/acc": 0.2}, "retain": {"general/acc": 0.7}}, both)
    with pytest.raises(Exception, match="names no model"):
        CheckSpec(metric="general/acc", model=[], at_least=0.3)
    # the cards use it: WMDP's general-accuracy band covers both baselines in one check
    checks = task.card.spec.embedded.checks
    assert any(c.metric == "general/acc" and c.models == ["target", "retain"] for c in checks)


@pytest.mark.parametrize("name", ["tofu", "wmdp", "copyright", "muse"])
def test_every_task_with_membership_probes_checks_its_non_members_are_exchangeable(name):
    """The retain model never saw the forget or the holdout texts: its attacks must sit near chance,
    or the privacy columns measure the data design, not unlearning. A retain model whose LOSS
    attack separates the two sets fails the default preset's checks."""
    from soul_bench.errors import ModelCheckError
    from soul_bench.prepare import embedded_preset

    task = load_task(name)
    checks = embedded_preset(task, None)["checks"]
    near_chance = {"mia/loss_auc": 0.5, "mia/zlib_auc": 0.5, "mia/min_k_auc": 0.5}
    exchangeability = [c for c in checks if c.model == "retain" and c.metric == "mia/*_auc"]
    assert exchangeability and all(c.at_least >= 0.3 and c.at_most <= 0.7 for c in exchangeability)
    task.check_models({"retain": near_chance}, exchangeability)
    with pytest.raises(ModelCheckError, match="mia/loss_auc of the retain model is 0.850"):
        task.check_models({"retain": {**near_chance, "mia/loss_auc": 0.85}}, exchangeability)


def test_stage_order_follows_init_and_refuses_circles():
    from soul_bench.prepare import stage_order

    stages = {"target": {"init": "retain"}, "retain": {"init": "scratch"}, "extra": {"init": "target"}}
    assert stage_order(stages) == ["retain", "target", "extra"]
    with pytest.raises(UserError, match="circle"):
        stage_order({"a": {"init": "b"}, "b": {"init": "a"}})


def test_embedded_overrides_reach_the_stages():
    """--config's ``embedded.stages`` changes a stage of the card's preset (here: the target trained
    from the base model on every author, TOFU's own recipe) and keeps the rest; a typo is one line
    naming it."""
    from soul_bench.prepare import embedded_preset

    task = load_task("tofu")
    card_stages = embedded_preset(task, None)["stages"]
    assert card_stages["target"]["init"] == "retain"  # tiny's target: the retain model, fine-tuned further
    recipe = embedded_preset(task, None, {"stages": {"target": {"init": "base", "data": ["full", "background"]}},
                                          "train": {"target": {"epochs": 12}}})
    assert recipe["stages"]["target"] == {"init": "base", "data": ["full", "background"]}
    assert recipe["stages"]["retain"] == card_stages["retain"] and recipe["train"]["target"]["epochs"] == 12
    with pytest.raises(UserError, match=r"stages\.target\.inti: Extra inputs are not permitted \(valid keys: init, data\)"):
        embedded_preset(task, None, {"stages": {"target": {"inti": "retain"}}})
    with pytest.raises(UserError, match=r"stages\.extra\.data: Field required"):
        embedded_preset(task, None, {"stages": {"extra": {"init": "target"}}})


def test_the_documented_schema_is_current():
    from soul_bench.card import CardSpec

    committed = json.loads((REPO / "docs" / "task-card.schema.json").read_text())
    assert committed == json.loads(json.dumps(CardSpec.model_json_schema())), \
        "regenerate: python -m soul_bench.card > docs/task-card.schema.json"


def test_tradeoff_defaults_to_the_first_two_metrics_not_tofu_names(tmp_path):
    from soul_bench.report.columns import metric_columns, tradeoff_axes
    from soul_bench.task import TaskCard

    raw = {"name": "t", "metrics": [{"name": "b", "direction": "lower"}, {"name": "a", "direction": "higher", "headline": True},
                                    {"name": "c", "ideal": 0.5}]}
    card = TaskCard(name="t", description="", folder=tmp_path, raw=raw)
    assert card.tradeoff == ("a", "b")
    x, y = tradeoff_axes(None, metric_columns(card.metrics))
    assert (x.name, y.name) == ("a", "b")
