"""The planner package pgd/workflow/: names from the catalog, method defaults from
config/distill/, the method config in the run fingerprint, the row manifests, the CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgd import catalog
from pgd import workflow as wf
from pgd.workflow import manifest as wm

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config" / "smoke.yaml"
MINI_ABLATIONS = REPO / "config" / "mini_ablations.yaml"  # the rows cut from the timed run


# ----------------------------------------------------------------------------- names

def test_catalog_methods_are_the_method_config_files():
    from pgd.method_options import known_methods
    stems = sorted(p.stem for p in (REPO / "config" / "distill").glob("*.py"))
    assert sorted(catalog.method_names()) == stems == known_methods()


def test_schema_file_lists_no_names_and_the_loader_fills_them_from_the_catalog():
    raw = wf.load_yaml(wf.SCHEMA_PATH)
    for name in ("detector", "method", "distill_method"):
        assert "enum" not in raw["$defs"][name], name
    schema = wf.load_schema()
    assert schema["$defs"]["detector"]["enum"] == list(catalog.detector_names())
    assert schema["$defs"]["method"]["enum"] == list(catalog.method_names())
    assert schema["$defs"]["distill_method"]["enum"] == list(catalog.distill_method_names())
    assert set(wf.DISTILL_METHODS) | set(wf.TEACHER_FREE_METHODS) == set(catalog.method_names())


def test_ld_only_where_the_catalog_allows_it():
    config = wf.load_yaml(SMOKE)
    config["tables"]["table1"]["methods"]["atss"].append("ld")
    with pytest.raises(wf.ConfigError, match=r"^tables\.table1\.methods\.atss: method 'ld' is "
                                             r"only defined for the gfl detector"):
        wf.Plan(config)


# ----------------------------------------------------------------------------- defaults

def test_sweep_default_row_comes_from_the_method_config():
    """ATSS's K = 9 is config/distill/pgd.py's, not the YAML's: the k=9 column of Table 6a
    is the Table 1 run, and k=30 a run of its own passing k=30."""
    plan = wf.load_plan(REPO / "config" / "config.yaml", [MINI_ABLATIONS])
    assert plan.row("table6a", "atss", "k=9", 0).run == plan.row("table1", "atss", "pgd", 0).run
    k30 = plan.run(plan.row("table6a", "atss", "k=30", 0).run)
    assert k30.variant == "k=30" and dict(k30.options) == {"k": 30}
    assert "k" not in (plan.config.get("detector_method_defaults") or {}).get("atss", {}).get(
        "pgd", {})


# ----------------------------------------------------------------------------- fingerprints

@pytest.fixture()
def method_root(tmp_path):
    root = tmp_path / "distill"
    shutil.copytree(REPO / "config" / "distill", root)
    return root


def _fingerprints(root):
    plan = wf.load_plan(SMOKE, method_root=root)
    return plan, {rel: plan.fingerprint(run) for rel, run in plan.runs.items()}


def test_editing_a_method_config_changes_only_that_methods_fingerprints(method_root):
    plan, before = _fingerprints(method_root)
    pgd_py = method_root / "pgd.py"
    text = pgd_py.read_text()
    pgd_py.write_text("# a reworded comment, longer than before\n" + text)
    assert _fingerprints(method_root)[1] == before  # comments do not retrain anything
    assert "delta=8e-4" in text
    pgd_py.write_text(text.replace("delta=8e-4", "delta=9.5e-4"))
    _, after = _fingerprints(method_root)
    changed = {rel for rel in before if before[rel] != after[rel]}
    pgd_runs = {rel for rel, r in plan.runs.items() if r.method == "pgd"}
    assert pgd_runs and changed == pgd_runs
    assert all(before[rel] == after[rel] for rel, r in plan.runs.items() if r.method == "fgd")


def test_a_detector_override_concerns_that_detector_only(method_root):
    plan, before = _fingerprints(method_root)
    pgd_py = method_root / "pgd.py"
    text = pgd_py.read_text()
    assert "autoassign=dict(pgd=dict(alpha=0.08, tau=0.4))" in text
    pgd_py.write_text(text.replace("autoassign=dict(pgd=dict(alpha=0.08, tau=0.4))",
                                   "autoassign=dict(pgd=dict(alpha=0.08, tau=0.45))"))
    _, after = _fingerprints(method_root)  # the smoke plan has no AutoAssign run
    assert after == before
    pgd_py.write_text(text.replace("atss=dict(pgd=dict(k=9))", "atss=dict(pgd=dict(k=10))"))
    plan2, after = _fingerprints(method_root)
    # k=9 -> 10 is the ATSS default now: the runs named by it change, DDOD's PGD does not
    ddod = [rel for rel, r in plan2.runs.items() if r.method == "pgd" and r.detector == "ddod"]
    assert ddod and all(after[rel] == before[rel] for rel in ddod)
    atss = [rel for rel, r in plan2.runs.items() if r.method == "pgd" and r.detector == "atss"
            and rel in before]
    assert atss and all(after[rel] != before[rel] for rel in atss)


# ----------------------------------------------------------------------------- manifests

def test_manifest_rows_follow_the_contract():
    plan = wf.load_plan(SMOKE)
    doc = wm.manifest(plan, "table6a")
    assert doc["table"] == "table6a" and doc["scale"] == "smoke"
    keys = ["table", "detector", "setting", "seed", "student_backbone", "run", "metrics",
            "options"]
    for row in doc["rows"]:
        assert list(row) == keys
        assert row["metrics"] == f"runs/{row['run']}/metrics.json"
        # the run's --loss-options, plus what defines the row
        assert plan.run(row["run"]).options_json().items() <= row["options"].items()
    settings = [(r["table"], r["setting"]) for r in doc["rows"]]
    # Table 6a has no student row of its own: Table 1's, with its own table id
    assert settings == [("table6a", "k=15"), ("table6a", "k=30"), ("table1", "student")]
    assert doc["rows"][0]["options"] == {"k": 15}
    assert doc["rows"][2]["options"] == {}
    # same rows (and runs) as the table builder gets: Plan.table_input_rows, in plan order
    for t in plan.tables:
        rows = wm.manifest(plan, t)["rows"]
        assert [(r["table"], r["detector"], r["setting"], r["seed"], r["run"]) for r in rows] \
            == [(r.table, r.detector, r.setting, r.seed, r.run) for r in plan.table_input_rows(t)]
    table7 = wm.manifest(plan, "table7")["rows"]
    neck = next(r for r in table7 if r["setting"] == "neck")
    assert neck["options"] == {"branches": ["neck"]}
    assert json.loads(wm.manifest_json(plan, "table6a")) == doc
    # a sweep column equal to the method default is the default run, and still says its value
    mini = wf.load_plan(REPO / "config" / "config.yaml", [MINI_ABLATIONS])
    rows = {r["setting"]: r for r in wm.manifest(mini, "table6a")["rows"]}
    assert rows["k=9"]["run"].endswith("/pgd/default/seed0")
    assert rows["k=9"]["options"] == {"k": 9}
    assert mini.run(rows["k=9"]["run"]).options_json() == {}
    tuned = wf.load_plan(REPO / "config" / "config.yaml",
                         [{"method_defaults": {"pgd": {"loss_scale": 0.2}}}])
    table1 = {(r["detector"], r["setting"], r["seed"]): r
              for r in wm.manifest(tuned, "table1")["rows"]}
    assert table1[("atss", "pgd", 0)]["options"] == {"loss_scale": 0.2}
    assert table1[("atss", "fgd", 0)]["options"] == {}
    assert table1[("atss", "student", 0)]["options"] == {}


def test_run_info_names_the_options():
    plan = wf.load_plan(SMOKE)
    run = plan.run(plan.row("table7", "atss", "neck", 0).run)
    info = run.run_info()
    assert info["options"] == {"branches": ["neck"]} and "table" not in info
    teacher = plan.run(plan.row("table1", "atss", "teacher", 0).run)
    assert teacher.run_info()["options"] == {}


def test_manifest_cli_writes_what_the_workflow_writes(tmp_path):
    out = tmp_path / "manifests" / "table7.json"
    res = subprocess.run([sys.executable, "-m", "pgd", "manifest", str(SMOKE), "--table",
                          "table7", "--out", str(out)], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(out.read_text()) == wm.manifest(wf.load_plan(SMOKE), "table7")
    res = subprocess.run([sys.executable, "-m", "pgd", "manifest", str(SMOKE), "--table",
                          "nosuch"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "nosuch" in res.stderr


# ----------------------------------------------------------------------------- CLI, layout

def test_pgd_cli_lists_the_workflow_commands():
    res = subprocess.run([sys.executable, "-m", "pgd", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for name in ("guard-workdir", "check-external-data", "summary", "manifest",
                 "describe-plan"):
        assert name in res.stdout, name
    res = subprocess.run([sys.executable, "-m", "pgd", "describe-plan", str(SMOKE)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.startswith("scale smoke:")


def test_package_modules_stay_small_and_the_old_module_is_gone():
    pkg = REPO / "pgd" / "workflow"
    for path in pkg.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
    assert not (REPO / "pgd" / "workflow_plan.py").exists()


def test_report_prints_the_premise_gates_first(tmp_path):
    """report.md: the regime section (pgd regime --md) comes before every table."""
    from pgd.workflow.rules import write_summary
    table = tmp_path / "table1.md"
    table.write_text("| Detector | AP |\n|---|---|\n| ATSS | 1.0 |\n")
    regime = tmp_path / "regime.md"
    regime.write_text("## Premise gates\n\n| gate | verdict |\n|---|---|\n| g | **FAIL** |\n")
    out = tmp_path / "report.md"
    write_summary(out, [str(table)], None, [], "mini", True, regime=str(regime))
    text = out.read_text()
    assert text.index("## Premise gates") < text.index("## Tables") < text.index("| ATSS |")
    write_summary(out, [str(table)], None, [], "mini", True)  # no regime: no section
    assert "Premise gates" not in out.read_text()
