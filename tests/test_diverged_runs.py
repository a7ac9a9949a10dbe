"""A diverged run is a failure, never a number: ``pgd test`` marks a model with non-finite
weights, and tables, figures and claims show / leave out such runs (and runs that detected
nothing) instead of reporting 0.0 AP."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgd.analysis import claims as claims_mod
from pgd.analysis.figures import make_figures
from pgd.tables.build import DIVERGED, aggregate, build_table, load_runs, write_manifest
from manifest_rows import write_row

COCO = ('AP', 'AP50', 'AP75', 'APS', 'APM', 'APL')


def write(root: Path, table, detector, setting, seed, ap, **flags) -> Path:
    """A metrics JSON as ``pgd test`` writes it (``flags``: no_detections / diverged) and the
    row manifest naming it; returns the manifest."""
    metrics = {m: (None if flags.get('diverged') else (0.0 if flags.get('no_detections')
                                                       else ap + i))
               for i, m in enumerate(COCO)}
    doc = {'metrics': metrics,
           'provenance': {'git_commit': 'abc', 'seed': seed,
                          'dataset': {'name': 'synthetic_shapes', 'synthetic': True}},
           'no_detections': bool(flags.get('no_detections')),
           'diverged': bool(flags.get('diverged'))}
    if flags.get('diverged'):
        doc['diverged_reason'] = 'non-finite weights in 3 tensor(s), e.g. bbox_head.x'
    return write_row(root, table, detector, setting, seed, doc)


@pytest.fixture()
def files(tmp_path):
    out = []
    for seed in (0, 1):
        out.append(write(tmp_path, 'table1', 'atss', 'student', seed, 20.0 + seed))
        out.append(write(tmp_path, 'table1', 'atss', 'pgd', seed, 24.0 + seed))
    # FGD: seed 0 fine, seed 1 detected nothing (what a NaN model gives) -> the row diverged
    out.append(write(tmp_path, 'table1', 'atss', 'fgd', 0, 23.0))
    out.append(write(tmp_path, 'table1', 'atss', 'fgd', 1, 0.0, no_detections=True))
    # FRS: non-finite weights, found by pgd test
    out.append(write(tmp_path, 'table1', 'atss', 'frs', 0, 0.0, diverged=True))
    return [str(p) for p in out]


def test_load_runs_keeps_diverged_rows_out_of_the_numbers(files):
    df = load_runs(files)
    assert set(df['setting']) == {'student', 'pgd'}  # FGD seed 0 goes with its row
    got = {(r['setting'], r['seed'], r['reason']) for r in df.attrs['diverged']}
    assert got == {('fgd', 1, 'no detections'),
                   ('frs', 0, 'non-finite weights in 3 tensor(s), e.g. bbox_head.x')}


def test_table_cells_say_diverged_never_a_number(files):
    table = build_table(aggregate(load_runs(files)), 'table1', paper=False)
    rows = {r['Setting']: r for r in table.to_dict('records') if r['Detector'] == 'ATSS'}
    assert rows['FGD']['AP'] == f'{DIVERGED} (seed 1)'
    assert rows['FRS']['AP'] == f'{DIVERGED} (seed 0)'
    assert all(rows['FRS'][m] == f'{DIVERGED} (seed 0)' for m in COCO)
    assert rows['Ours (PGD)']['AP'].startswith('24.5')  # the others keep their numbers
    assert '0.0' not in rows['FGD']['AP'] + rows['FRS']['AP']


def test_figures_leave_diverged_runs_out(files, tmp_path, capsys):
    written = make_figures(files, [], tmp_path / 'figs')
    assert 'fig_table1_gains' in written
    printed = capsys.readouterr().out
    assert 'left out, diverged: table1 atss fgd seed 1 (no detections)' in printed
    assert 'table1 atss frs seed 0' in printed


def test_claims_exclude_diverged_runs_and_name_them(files):
    claims, _, _ = claims_mod.check_claims(files)
    by_title = {c.title: c for c in claims}
    pgd_vs_fgd = by_title['PGD beats FGD on every detector (Table 1)']
    assert pgd_vs_fgd.status == 'not measured'  # FGD diverged: no comparison
    assert 'table1 atss fgd seed 1 (no detections)' in pgd_vs_fgd.missing
    best = by_title['PGD beats every competitor on each detector (Table 1 AP)']
    assert best.comparisons == []
    assert any('excluded, diverged' in n and 'frs seed 0' in n and 'fgd seed 1' in n
               for n in best.notes)
    improves = by_title['PGD improves over the student on every detector (Table 1)']
    assert improves.status == 'holds' and not any('diverged' in n for n in improves.notes)
    text = claims_mod.render(claims, 'mini', True, len(files), ['abc'], 0)
    assert 'excluded, diverged: table1 atss fgd seed 1 (no detections)' in text


def test_pgd_test_marks_a_model_with_non_finite_weights_diverged(tiny_shapes, tmp_path):
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from conftest import run_pgd
    from pgd.engine.config_utils import resolve_config
    register_all_modules()
    model = MODELS.build(Config.fromfile(str(resolve_config('mini/atss_r18_student'))).model)
    state = model.state_dict()
    name = next(k for k, v in state.items() if k.startswith('bbox_head') and v.is_floating_point())
    state[name] = torch.full_like(state[name], float('nan'))
    ckpt = tmp_path / 'final.pth'
    torch.save({'state_dict': state, 'meta': {'seed': 0}}, ckpt)
    out = tmp_path / 'metrics.json'
    res = run_pgd('test', 'mini/atss_r18_student', ckpt, '--out', out, '--data-root',
                  tiny_shapes, '--device', 'cpu', '--run-info', 'table=table1',
                  'detector=atss', 'setting=student', 'seed=0', timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
    assert f'non-finite weights in 1 tensor(s), e.g. {name}' in res.stdout
    doc = json.loads(out.read_text())
    assert doc['diverged'] is True and name in doc['diverged_reason']
    assert doc['metrics'] == {m: None for m in COCO}
    # and the table shows it as diverged
    manifest = tmp_path / 'manifests' / 'table1.json'
    write_manifest(manifest, 'table1', 'test', [{
        'table': 'table1', 'detector': 'atss', 'setting': 'student', 'seed': 0,
        'student_backbone': 'r18', 'run': 'student/x/seed0', 'metrics': 'metrics.json',
        'options': {}}])
    table = build_table(aggregate(load_runs([manifest])), 'table1', paper=False)
    rows = {(r['Detector'], r['Setting']): r for r in table.to_dict('records')}
    assert rows[('ATSS', 'Student')]['AP'] == f'{DIVERGED} (seed 0)'


def test_non_finite_tensors_finds_only_bad_float_tensors():
    import torch

    from pgd.engine.test import non_finite_tensors
    state = {'a': torch.ones(3), 'b': torch.tensor([1.0, float('inf')]),
             'c': torch.tensor([1, 2]), 'd': torch.tensor([float('nan')])}
    assert non_finite_tensors(state) == ['b', 'd']
