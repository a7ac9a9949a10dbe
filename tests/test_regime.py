"""Premise gates (`pgd regime`): each can pass, fail, or be missing; computed from the files the
workflow writes."""
import json
from pathlib import Path

import pytest

from pgd.analysis import regime
from pgd.cli import main


def test_fig3_gate_pass_fail_missing():
    good = regime.gate_fig3('t', {'ratios': [0, 0.01, 0.05], 'AP': [40.0, 20.0, 10.0]})
    assert good['pass'] is True and good['measured'] == pytest.approx(0.5)
    bad = regime.gate_fig3('t', {'ratios': [0, 0.01], 'AP': [8.3, 7.0]})   # the mini teacher
    assert bad['pass'] is False and bad['measured'] == pytest.approx(0.1566, abs=1e-4)
    assert regime.gate_fig3('t', {'ratios': [0, 0.05], 'AP': [8.0, 4.0]})['pass'] is None


def test_student_teacher_gates():
    ok = regime.gate_student_teacher('atss', 45.5, [39.6, 39.4, 39.8])   # the paper's ATSS
    assert [g['pass'] for g in ok] == [True, True]
    assert ok[0]['measured'] == pytest.approx(0.8703, abs=1e-4)
    untrained = regime.gate_student_teacher('atss', 8.3, [2.8, 2.8, 2.9])  # mini, from scratch
    assert [g['pass'] for g in untrained] == [False, True]
    too_close = regime.gate_student_teacher('fcos', 10.0, [9.5])
    assert [g['pass'] for g in too_close] == [False, False]
    assert [g['pass'] for g in regime.gate_student_teacher('gfl', None, [3.0])] == [None, None]


def test_geometry_and_plateau_gates():
    gates = regime.gate_geometry('mini/atss', {'median': 21.0, 'frac_at_least_4k': 0.101})
    assert [g['pass'] for g in gates] == [False, False]
    gates = regime.gate_geometry('paper/atss', {'median': 95.0, 'frac_at_least_4k': 0.3})
    assert [g['pass'] for g in gates] == [True, True]
    flat = regime.gate_plateau('s', [(1, 1.0), (2, 5.0), (4, 9.5), (5, 9.8)])
    assert flat['pass'] is True and flat['measured'] == pytest.approx(0.0306, abs=1e-4)
    rising = regime.gate_plateau('s', [(1, 1.0), (2, 3.0), (4, 5.0), (5, 8.0)])
    assert rising['pass'] is False
    assert regime.gate_plateau('s', [(1, 1.0)])['pass'] is None


def _metrics(ap):
    return {'metrics': {'AP': ap}, 'provenance': {'git_commit': 'x',
                                                 'dataset': {'synthetic': True}}}


def test_cli_on_workflow_files(tmp_path, capsys):
    from manifest_rows import write_row
    files = [str(write_row(tmp_path, table, det, setting, seed, _metrics(ap)))
             for table, det, setting, seed, ap in [
                 ('table1', 'atss', 'teacher', 0, 45.5), ('table1', 'atss', 'student', 0, 39.6),
                 ('table1', 'atss', 'student', 1, 39.8), ('table1', 'atss', 'pgd', 0, 42.0),
                 ('table5', 'atss', 'student', 0, 1.0)]]  # not Table 1: ignored
    mo = tmp_path / 'mo.json'
    mo.write_text(json.dumps({'label': 'atss_r34_teacher', 'ratios': [0, 0.01],
                              'AP': [45.5, 22.0]}))
    geo = tmp_path / 'geo.json'
    geo.write_text(json.dumps({'config': 'paper/atss_r50_student', 'median': 20.0,
                               'frac_at_least_4k': 0.5}))
    out, md = tmp_path / 'regime.json', tmp_path / 'regime.md'
    assert main(['regime', '--mask-out', str(mo), '--rows', *files, '--geometry', str(geo),
                 '--out', str(out), '--md', str(md)]) == 0
    result = json.loads(out.read_text())
    verdicts = {(g['gate'], g['subject']): g['pass'] for g in result['gates']}
    assert verdicts == {('fig3_top1pct_drop', 'atss_r34_teacher'): True,
                        ('student_teacher_ratio', 'atss'): True,
                        ('teacher_student_gap', 'atss'): True,
                        ('geometry_median', 'paper/atss_r50_student'): False,
                        ('geometry_frac_4k', 'paper/atss_r50_student'): True}
    assert result['all_pass'] is False
    text = md.read_text()
    assert '| geometry_median | paper/atss_r50_student | 20 |' in text and '**FAIL**' in text
    assert 'All gates pass: **no**' in capsys.readouterr().out


def test_cli_unreadable_input(tmp_path, capsys):
    assert main(['regime', '--mask-out', str(tmp_path / 'none.json'),
                 '--out', str(tmp_path / 'r.json')]) == 2
    assert 'cannot read' in capsys.readouterr().err


def test_plateau_from_training_logs(tmp_path):
    """``--training-log``: the val AP curve of a run's training_log.json feeds the plateau
    gate; a run that validated once is 'missing'."""
    def log(folder, aps):
        path = tmp_path / folder / 'training_log.json'
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({'train': [], 'val': [
            {'step': 80 * (i + 1), 'coco/bbox_mAP': ap, 'coco/bbox_mAP_50': 0.5}
            for i, ap in enumerate(aps)]}))
        return str(path)
    flat = log('flat', [0.10, 0.20, 0.25, 0.29, 0.30])
    rising = log('rising', [0.05, 0.10, 0.15, 0.20, 0.30])
    once = log('once', [0.30])
    doc = json.loads(Path(flat).read_text())
    curve = regime.curve_from_training_log(doc)
    assert [step for step, _ in curve] == [80.0, 160.0, 240.0, 320.0, 400.0]
    assert [ap for _, ap in curve] == pytest.approx([10.0, 20.0, 25.0, 29.0, 30.0])
    out = tmp_path / 'regime.json'
    assert main(['regime', '--training-log', flat, rising, once, '--out', str(out)]) == 0
    gates = {g['subject']: g for g in json.loads(out.read_text())['gates']}
    assert gates[str(tmp_path / 'flat')]['pass'] is True
    assert gates[str(tmp_path / 'flat')]['measured'] == pytest.approx(1 / 30, abs=1e-4)
    assert gates[str(tmp_path / 'rising')]['pass'] is False
    assert gates[str(tmp_path / 'once')]['pass'] is None
