"""Table builders on synthetic metrics files and row manifests written to tmp_path."""
import json

import pandas as pd
import pytest

from pgd.tables.build import (
    MISSING,
    MetricsFileError,
    TableSpec,
    aggregate,
    build_all,
    build_table,
    load_runs,
    write_table,
)
from manifest_rows import write_row

COCO = ["AP", "AP50", "AP75", "APS", "APM", "APL"]


def _write(tmp_path, table, detector, setting, seed, metrics, synthetic=True, commit="abc123",
           backbone="r18"):
    doc = {
        "metrics": metrics,
        "provenance": {"config": f"configs/{detector}_{setting}.py", "seed": seed,
                       "git_commit": commit,
                       "dataset": {"name": "synthetic-coco", "synthetic": synthetic}},
    }
    return write_row(tmp_path, table, detector, setting, seed, doc, backbone=backbone)


def _coco(ap):
    return {m: ap + i for i, m in enumerate(COCO)}


@pytest.fixture
def runs(tmp_path):
    paths = [
        _write(tmp_path, "table1", "atss", "student", 0, _coco(10.0)),
        _write(tmp_path, "table1", "atss", "student", 1, _coco(12.0), commit="def456"),
        _write(tmp_path, "table1", "atss", "pgd", 0, _coco(14.0)),
        _write(tmp_path, "table1", "atss", "pgd", 1, _coco(15.0)),
        _write(tmp_path, "table1", "atss", "pgd", 2, _coco(16.0)),
        _write(tmp_path, "table1", "atss", "teacher", 0, _coco(30.0)),
    ]
    return paths


def test_load_runs_long_format(runs):
    df = load_runs(runs)
    assert len(df) == 6 * 6
    assert {"table", "detector", "setting", "seed", "metric", "value", "path"} <= set(df.columns)
    assert df.synthetic.all()


def test_aggregate_mean_std_n(runs):
    agg = aggregate(load_runs(runs))
    row = agg[(agg.setting == "pgd") & (agg.metric == "AP")].iloc[0]
    assert row["mean"] == pytest.approx(15.0)
    assert row["std"] == pytest.approx(1.0)  # sample std of 14, 15, 16
    assert row["n"] == 3 and row["seeds"] == "0,1,2"
    teacher = agg[(agg.setting == "teacher") & (agg.metric == "AP")].iloc[0]
    assert teacher["n"] == 1 and pd.isna(teacher["std"])
    student = agg[(agg.setting == "student") & (agg.metric == "AP")].iloc[0]
    assert student["git_commits"] == "abc123,def456"


def test_build_table_cells_and_deltas(runs):
    table = build_table(aggregate(load_runs(runs)), "table1")
    atss = table[table.Detector == "ATSS"].set_index("Setting")
    # student: mean 11 (10, 12), sample std sqrt(2) = 1.41; no delta on the baseline itself
    assert atss.loc["Student", "AP"] == "11.0 \u00b1 1.4"
    # pgd: mean 15, std 1, delta 15 - 11 = +4.0
    assert atss.loc["Ours (PGD)", "AP"] == "15.0 \u00b1 1.0 (+4.0)"
    assert atss.loc["Ours (PGD)", "APL"] == "20.0 \u00b1 1.0 (+4.0)"
    assert atss.loc["Ours (PGD)", "n"] == "3"
    # single seed: no std; teacher: no delta
    assert atss.loc["Teacher", "AP"] == "30.0"
    # rows in paper order and missing runs shown as a dash
    assert list(atss.index) == ["Teacher", "Student", "DeFeat", "FRS", "FGFI", "FKD", "FGD",
                                "Ours (PGD)"]
    assert atss.loc["FGD", "AP"] == MISSING and atss.loc["FGD", "n"] == MISSING
    fcos = table[table.Detector == "FCOS"]
    assert (fcos[COCO] == MISSING).all().all()
    assert set(table.Detector) == {"FCOS", "AutoAssign", "ATSS", "GFL", "DDOD"}


def test_paper_columns_from_paper_values(runs):
    table = build_table(aggregate(load_runs(runs)), "table1")
    atss = table[table.Detector == "ATSS"].set_index("Setting")
    assert atss.loc["Ours (PGD)", "AP (paper)"] == "44.2 (+4.6)"  # 44.2 - 39.6
    assert atss.loc["Student", "AP (paper)"] == "39.6"
    assert atss.loc["FGD", "APS (paper)"] == "25.7 (+2.7)"
    gfl = table[table.Detector == "GFL"].set_index("Setting")
    assert gfl.loc["LD", "AP75 (paper)"] == "47.4 (+4.1)"
    # deltas are recomputed from the absolute values, not copied (the paper prints +5.8 here)
    fcos = table[table.Detector == "FCOS"].set_index("Setting")
    assert fcos.loc["Ours (PGD)", "APM (paper)"] == "46.1 (+4.8)"
    no_paper = build_table(aggregate(load_runs(runs)), "table1", paper=False)
    assert not any(c.endswith("(paper)") for c in no_paper.columns)


def test_mr_delta_sign(tmp_path):
    paths = [
        _write(tmp_path, "table3", "ddod", "student", 0, {"MR": 60.0, "AP": 50.0, "JI": 40.0}),
        _write(tmp_path, "table3", "ddod", "pgd", 0, {"MR": 58.3, "AP": 51.0, "JI": 40.5}),
    ]
    table = build_table(aggregate(load_runs(paths)), "table3").set_index("Setting")
    assert list(table.columns[2:5]) == ["MR", "AP", "JI"]
    assert table.loc["Ours (PGD)", "MR"] == "58.3 (-1.7)"
    assert table.loc["Ours (PGD)", "AP"] == "51.0 (+1.0)"
    assert table.loc["Ours (PGD)", "MR (paper)"] == "42.8 (-3.2)"
    assert table.loc["FKD", "MR (paper)"] == "44.3 (-1.7)"


def test_zero_delta_has_no_negative_zero(tmp_path):
    paths = [_write(tmp_path, "table3", "ddod", "student", 0, {"MR": 60.0}),
             _write(tmp_path, "table3", "ddod", "fgd", 0, {"MR": 59.99})]
    table = build_table(aggregate(load_runs(paths)), "table3").set_index("Setting")
    assert table.loc["FGD", "MR"] == "60.0 (+0.0)"


def test_baseline_from_fallback_table(tmp_path):
    paths = [_write(tmp_path, "table1", "atss", "student", 0, {"AP": 20.0}),
             _write(tmp_path, "table6a", "atss", "k=30", 0, {"AP": 22.5})]
    table = build_table(aggregate(load_runs(paths)), "table6a").set_index("Setting")
    assert table.loc["k=30", "AP"] == "22.5 (+2.5)"
    assert table.loc["k=30", "AP (paper)"] == "44.2 (+4.6)"  # Table 1 student: 39.6
    assert table.loc["k=1", "AP"] == MISSING


def test_custom_spec_and_extra_rows(tmp_path):
    paths = [_write(tmp_path, "table9", "atss", "student", 0, {"AP": 20.0}),
             _write(tmp_path, "table9", "atss", "mine", 0, {"AP": 21.0})]
    spec = TableSpec(rows=(("atss", "student"),), metrics=("AP",))
    table = build_table(aggregate(load_runs(paths)), "table9", spec=spec)
    assert table.Setting.tolist() == ["Student", "mine"]
    assert table.set_index("Setting").loc["mine", "AP"] == "21.0 (+1.0)"
    assert table.set_index("Setting").loc["mine", "AP (paper)"] == MISSING


def test_write_table_files(tmp_path, runs):
    table = build_table(aggregate(load_runs(runs)), "table1")
    out = tmp_path / "out"
    paths = write_table(table, out, "table1", "Comparison on COCO.")
    assert set(paths) == {"md", "tex", "csv"}
    md = paths["md"].read_text()
    tex = paths["tex"].read_text()
    assert "SYNTHETIC" in md and "SYNTHETIC" in tex and "SYNTHETIC" in paths["csv"].read_text()
    assert "abc123" in md and "def456" in md and "seeds per row: 1-3" in md
    assert "| Detector | Setting | n | AP |" in md
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\midrule" in tex
    assert r"15.0 $\pm$ 1.0 (+4.0)" in tex and "\u2014" not in tex
    back = pd.read_csv(paths["csv"], comment="#")
    assert back.shape == table.shape and list(back.columns) == list(table.columns)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_real_data_caption_not_synthetic(tmp_path):
    paths = [_write(tmp_path, "table3", "ddod", "student", 0, {"MR": 60.0}, synthetic=False)]
    table = build_table(aggregate(load_runs(paths)), "table3")
    md = write_table(table, tmp_path / "o", "t3", "CrowdHuman.")["md"].read_text()
    assert "SYNTHETIC" not in md and "CrowdHuman." in md


def test_build_all(tmp_path, runs):
    written = build_all(runs, tmp_path / "tables")
    assert set(written) == {"table1"}
    assert written["table1"]["tex"].exists()


def _metrics_of(manifest):
    row = json.loads(manifest.read_text())["rows"][0]
    return manifest.parent.parent / row["metrics"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("metrics"), "'metrics'"),
        (lambda d: d.__setitem__("metrics", {}), "empty"),
        (lambda d: d["metrics"].__setitem__("AP", "high"), "non-numeric"),
        (lambda d: d["metrics"].__setitem__("AP", None), "undefined"),
        (lambda d: d["provenance"]["dataset"].pop("synthetic"), "synthetic"),
        (lambda d: d["run"].__setitem__("run", "another/run"), "another/run"),
    ],
)
def test_malformed_metrics_file(tmp_path, mutate, message):
    p = _write(tmp_path, "table1", "atss", "pgd", 0, {"AP": 1.0})
    metrics = _metrics_of(p)
    doc = json.loads(metrics.read_text())
    mutate(doc)
    metrics.write_text(json.dumps(doc))
    with pytest.raises(MetricsFileError, match=message) as exc:
        load_runs([p])
    # the error names the manifest, the row and the metrics file
    assert str(p) in str(exc.value) and str(metrics) in str(exc.value)
    assert "row 0 (table1 atss pgd seed 0)" in str(exc.value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("setting"), "'setting'"),
        (lambda r: r.__setitem__("seed", "0"), "'seed'"),
        (lambda r: r.__setitem__("options", "k=9"), "'options'"),
        (lambda r: r.pop("metrics"), "'metrics'"),
    ],
)
def test_malformed_manifest_row(tmp_path, mutate, message):
    p = _write(tmp_path, "table1", "atss", "pgd", 0, {"AP": 1.0})
    doc = json.loads(p.read_text())
    mutate(doc["rows"][0])
    p.write_text(json.dumps(doc))
    with pytest.raises(MetricsFileError, match=message) as exc:
        load_runs([p])
    assert str(p) in str(exc.value) and "row 0" in str(exc.value)


def test_missing_metrics_file_names_manifest_and_row(tmp_path):
    p = _write(tmp_path, "table1", "atss", "pgd", 0, {"AP": 1.0})
    _metrics_of(p).unlink()
    with pytest.raises(MetricsFileError, match="cannot read metrics JSON") as exc:
        load_runs([p])
    assert str(p) in str(exc.value) and "table1 atss pgd seed 0" in str(exc.value)


def test_undefined_metric_is_left_out_not_an_error(tmp_path):
    # pycocotools' -1 (no ground truth in an area range) is written as None by `pgd test`
    p = _write(tmp_path, "table1", "atss", "pgd", 0, {"AP": 1.0, "APL": None})
    df = load_runs([p])
    assert set(df["metric"]) == {"AP"}


def test_unreadable_and_duplicate_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MetricsFileError, match="bad.json"):
        load_runs([bad])
    a = _write(tmp_path, "table1", "atss", "pgd", 0, {"AP": 1.0})
    # the same row in a second manifest (a borrowed baseline) is read once
    b = tmp_path / "manifests" / "copy.json"
    b.write_text(a.read_text())
    assert len(load_runs([a, b])) == 1
    # the same row pointing at another run is an error
    doc = json.loads(b.read_text())
    doc["rows"][0]["run"] = "other/run"
    b.write_text(json.dumps(doc))
    with pytest.raises(MetricsFileError, match="same row"):
        load_runs([a, b])


def test_options_are_a_structured_column(tmp_path):
    doc = {"metrics": {"AP": 3.0}, "provenance": {"git_commit": "c", "dataset": {
        "name": "s", "synthetic": True}}}
    p = write_row(tmp_path, "table6a", "atss", "k=9", 0, doc, options={"k": 9})
    q = write_row(tmp_path, "table7", "atss", "cls+reg", 0, doc,
                  options={"branches": ["cls", "reg"]})
    df = load_runs([p, q])
    got = {r["setting"]: r["options"] for r in df.to_dict("records")}
    assert got == {"k=9": {"k": 9}, "cls+reg": {"branches": ["cls", "reg"]}}
    assert set(df["run"]) == {"fake/table6a/atss/k=9/seed0", "fake/table7/atss/cls+reg/seed0"}


def test_extra_rows_join_their_detector_block_controls_after_the_student():
    from pgd.tables.build import _with_extra_rows
    rows = [("fcos", "teacher"), ("fcos", "student"), ("fcos", "pgd"),
            ("atss", "teacher"), ("atss", "student"), ("atss", "pgd")]
    got = _with_extra_rows(rows, [("atss", "inherit"), ("atss", "k=45"), ("yolo", "pgd"),
                                  ("fcos", "pgd")])
    assert got == [("fcos", "teacher"), ("fcos", "student"), ("fcos", "pgd"),
                   ("atss", "teacher"), ("atss", "student"), ("atss", "inherit"),
                   ("atss", "pgd"), ("atss", "k=45"), ("yolo", "pgd")]
