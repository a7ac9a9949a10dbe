"""The transcribed paper numbers: spot checks against the paper text and coverage counts."""
import pytest

from pgd.tables.paper_values import COLUMNS, load_paper_values, paper_value

COCO = ["AP", "AP50", "AP75", "APS", "APM", "APL"]


@pytest.mark.parametrize(
    "table, detector, setting, metric, expected",
    [
        ("table1", "atss", "pgd", "AP", 44.2),
        ("table1", "fcos", "student", "AP", 38.2),
        ("table1", "gfl", "ld", "AP75", 47.4),
        ("table1", "ddod", "teacher", "APL", 60.1),
        ("table1", "autoassign", "fgd", "APS", 25.2),
        ("table1", "ddod", "fgfi", "AP", 44.1),
        ("table2", "atss", "pgd", "AP", 38.3),
        ("table2", "fcos", "student", "APL", 42.6),
        ("table3", "ddod", "pgd", "MR", 42.8),
        ("table3", "ddod", "student", "JI", 79.0),
        ("table3", "ddod", "fkd", "AP", 89.1),
        ("table4", "fcos", "student", "AP", 38.2),
        ("table4", "atss", "pgd", "AP", 40.7),
        ("table5", "atss", "kde", "AP", 44.0),
        ("table5", "atss", "boxgauss", "APS", 26.7),
        ("table5", "atss", "pgw", "AP", 44.2),
        ("table6a", "atss", "k=30", "AP", 44.2),
        ("table6a", "atss", "k=1", "AP", 43.2),
        ("table6b", "fcos", "alpha=0.03", "AP", 42.5),
        ("table6b", "atss", "alpha=0.2", "AP", 43.2),
        ("table7", "atss", "reg", "AP", 41.7),
        ("table7", "atss", "neck", "AP", 43.6),
        ("table7", "atss", "cls", "APS", 26.5),
    ],
)
def test_hand_checked_values(table, detector, setting, metric, expected):
    assert paper_value(table, detector, setting, metric) == pytest.approx(expected)


def test_backbone_filter_and_missing():
    assert paper_value("table2", "fcos", "pgd", "AP", student_backbone="mobilenetv2") == 37.3
    assert paper_value("table2", "fcos", "pgd", "AP", student_backbone="r50") is None
    assert paper_value("table1", "fcos", "fgfi", "AP") is None  # FGFI only for ATSS and DDOD
    assert paper_value("table1", "atss", "ld", "AP") is None  # LD only for GFL


def _settings(df, table, detector):
    sub = df[(df.table == table) & (df.detector == detector)]
    return list(dict.fromkeys(sub.setting))


def test_table1_coverage():
    df = load_paper_values()
    t1 = df[df.table == "table1"]
    base = ["teacher", "student", "defeat", "frs", "fkd", "fgd", "pgd"]
    assert set(t1.detector) == {"atss", "fcos", "gfl", "ddod", "autoassign"}
    assert set(_settings(df, "table1", "fcos")) == set(base)
    assert set(_settings(df, "table1", "autoassign")) == set(base)
    assert set(_settings(df, "table1", "atss")) == set(base) | {"fgfi"}
    assert set(_settings(df, "table1", "ddod")) == set(base) | {"fgfi"}
    assert set(_settings(df, "table1", "gfl")) == set(base) | {"ld"}
    assert len(t1) == (7 + 7 + 8 + 8 + 8) * 6
    for (det, setting), metrics in t1.groupby(["detector", "setting"]).metric:
        assert sorted(metrics) == sorted(COCO), (det, setting)


def test_other_tables_coverage():
    df = load_paper_values()
    counts = df.groupby("table").size().to_dict()
    assert counts == {
        "table1": 228,
        "table2": 2 * 4 * 6,
        "table3": 8 * 3,
        "table4": 2 * 3 * 6,
        "table5": 9 * 6,
        "table6a": 7,
        "table6b": 2 * 7,
        "table7": 5 * 6,
    }
    assert _settings(df, "table3", "ddod") == [
        "teacher", "student", "fkd", "defeat", "frs", "fgfi", "fgd", "pgd"]
    assert set(df[df.table == "table3"].metric) == {"MR", "AP", "JI"}
    assert _settings(df, "table5", "atss") == [
        "teacher", "student", "box", "boxgauss", "centre", "quality", "topkeq", "kde", "pgw"]
    assert _settings(df, "table6a", "atss") == [f"k={k}" for k in (1, 5, 9, 15, 30, 45, 60)]
    alphas = [f"alpha={a}" for a in (0.005, 0.01, 0.03, 0.05, 0.07, 0.1, 0.2)]
    assert _settings(df, "table6b", "fcos") == alphas == _settings(df, "table6b", "atss")
    assert _settings(df, "table7", "atss") == ["student", "neck", "cls", "reg", "cls+reg"]
    assert set(df[df.table == "table2"].student_backbone) == {"mobilenetv2"}
    assert set(df[df.table == "table4"].setting) == {"student", "fgd", "pgd"}


def test_every_row_has_a_source_and_sane_values():
    df = load_paper_values()
    assert list(df.columns) == COLUMNS
    assert df.source.notna().all()
    assert df.source.str.startswith("PGD ECCV'22 Table").all()
    assert df.value.between(0, 100).all()
    for col in ["table", "detector", "student_backbone", "setting", "metric"]:
        assert df[col].notna().all(), col
    key = ["table", "detector", "student_backbone", "setting", "metric"]
    assert not df.duplicated(key).any()


def test_shared_rows_are_consistent_across_tables():
    # The same trained models reappear in several tables; their numbers must agree.
    for t in ("table5", "table7"):
        for m in COCO:
            assert paper_value(t, "atss", "student", m) == paper_value("table1", "atss", "student", m)
            ours = "pgw" if t == "table5" else "cls+reg"
            assert paper_value(t, "atss", ours, m) == paper_value("table1", "atss", "pgd", m)
    for det in ("atss", "fcos"):
        for m in COCO:
            assert paper_value("table2", det, "teacher", m) == paper_value("table1", det, "teacher", m)
            assert paper_value("table4", det, "student", m) == paper_value("table1", det, "student", m)
    assert paper_value("table6a", "atss", "k=30", "AP") == paper_value("table1", "atss", "pgd", "AP")
