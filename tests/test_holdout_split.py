"""`pgd split-holdout` and the `holdout` dataset kind used to tune loss scales on TRAIN images."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pgd.data.holdout import split_holdout
from pgd.data.make_data import make_dataset
from pgd.errors import UserError
from pgd import workflow as wp

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "shapes"
    make_dataset("shapes", str(out), num_train=20, num_val=4, image_size=96, seed=1)
    return out


def _ids(path):
    doc = json.loads(Path(path).read_text())
    return {im["id"] for im in doc["images"]}, {a["image_id"] for a in doc["annotations"]}, doc


def test_split_is_a_partition_of_train_and_never_touches_val(source, tmp_path):
    res = split_holdout(str(source), str(tmp_path / "h"), fraction=0.25, seed=0)
    assert (res["num_fit"], res["num_held_out"]) == (15, 5)
    fit, fit_ann_imgs, fit_doc = _ids(tmp_path / "h/annotations/synthetic_shapes_train.json")
    held, held_ann_imgs, held_doc = _ids(tmp_path / "h/annotations/synthetic_shapes_val.json")
    train, _, train_doc = _ids(source / "annotations/synthetic_shapes_train.json")
    assert fit | held == train and not fit & held
    assert fit_ann_imgs <= fit and held_ann_imgs <= held
    n_ann = len(fit_doc["annotations"]) + len(held_doc["annotations"])
    assert n_ann == len(train_doc["annotations"])
    # both parts read the source's TRAIN images; the val images are not reachable
    for part in ("train", "val"):
        assert (tmp_path / "h" / part).resolve() == (source / "train").resolve()
    meta = json.loads((tmp_path / "h/meta.json").read_text())
    assert meta["synthetic"] is True and meta["holdout"]["num_held_out"] == 5
    assert "HELD-OUT" in held_doc["info"]["description"]


def test_split_is_deterministic_and_seeded(source, tmp_path):
    a = split_holdout(str(source), str(tmp_path / "a"), 0.25, seed=0)
    b = split_holdout(str(source), str(tmp_path / "b"), 0.25, seed=0)
    c = split_holdout(str(source), str(tmp_path / "c"), 0.25, seed=1)
    held = {k: _ids(tmp_path / k / "annotations/synthetic_shapes_val.json")[0] for k in "abc"}
    assert a["num_fit"] == b["num_fit"] == c["num_fit"] == 15
    assert held["a"] == held["b"] and held["a"] != held["c"]


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001])
def test_bad_fractions_are_user_errors(source, tmp_path, fraction):
    with pytest.raises(UserError):
        split_holdout(str(source), str(tmp_path / "x"), fraction)


def _tuning_plan(**change):
    cfg = yaml.safe_load((REPO / "config/tuning.yaml").read_text())
    cfg["datasets"]["shapes_holdout"].update(change)
    return wp.Plan(cfg, config_root=None)


def test_tuning_plan_trains_and_scores_only_on_the_holdout_split():
    plan = _tuning_plan()
    assert {r.dataset for r in plan.runs.values()} == {"shapes_holdout"}
    assert plan.holdout_datasets() == ["shapes_holdout"] and plan.synthetic_datasets() == ["shapes"]
    scales = {}
    for r in plan.runs.values():
        if r.method:
            scales.setdefault(r.method, set()).add(dict(r.options)["loss_scale"])
    # the same base grid (budget) for every method, PGD included; extended only by one x5 step
    # past an end of it (where a method's best held-out AP sat at that end)
    assert set(scales) == {"defeat", "frs", "fgfi", "fkd", "fgd", "pgd", "ld", "lgd"}
    base = {0.2, 1, 5}
    for method, grid in scales.items():
        assert base <= grid and grid - base <= {0.04, 25}, (method, grid)


def test_tuning_uses_the_mini_dataset_and_resources():
    mini = yaml.safe_load((REPO / "config/config.yaml").read_text())
    tuning = yaml.safe_load((REPO / "config/tuning.yaml").read_text())
    # the same images (generator, size, difficulty, val split), and the tuning's fit part is
    # as large as the mini train split: loss scales are chosen at the mini training budget
    # (same number of iterations per epoch and the same schedules)
    source, mini_shapes = dict(tuning["datasets"]["shapes"]), dict(mini["datasets"]["shapes"])
    fit = round(source.pop("num_train") * (1 - tuning["datasets"]["shapes_holdout"]["fraction"]))
    assert fit == mini_shapes.pop("num_train")
    assert source == mini_shapes
    assert tuning["resources"] == mini["resources"]
    assert tuning["config_dir"] == mini["config_dir"]
    assert tuning["pretrain"] == mini["pretrain"]  # the same synthetic-pretrained backbones


def test_holdout_needs_a_synthetic_source():
    with pytest.raises(wp.ConfigError, match="of"):
        _tuning_plan(of="nosuch")


def test_tuning_summary_picks_the_best_held_out_scale_ties_towards_one():
    from pgd.tables.tuning import summarise, to_csv

    def rec(table, scale, ap, det="atss"):
        # the loss scale comes from the row's options (the manifest), never from its label
        setting = "student" if scale is None else f"s{scale}"
        return {"table": table, "detector": det, "setting": setting, "AP": ap, "AP50": 2 * ap,
                "options": {} if scale is None else {"loss_scale": scale},
                "run": f"{table}/{setting}", "git_commit": "abc"}

    rows = summarise([rec("tune_pgd", 0.2, 5.0), rec("tune_pgd", 1, 6.0),
                      rec("tune_pgd", 5, 6.0), rec("tune_fgd", 0.2, 7.0),
                      rec("tune_fgd", 1, 4.0), rec("tune_fgd", None, 3.0)])
    chosen = {r["method"]: r["loss_scale"] for r in rows if r["chosen"]}
    assert chosen == {"pgd": 1.0, "fgd": 0.2}
    gains = {(r["method"], r["loss_scale"]): r["gain_vs_student"] for r in rows}
    assert gains[("fgd", 0.2)] == 4.0 and gains[("pgd", 1.0)] == 3.0
    assert to_csv(rows).startswith("# SYNTHETIC")
