"""Reference vs reproduction: the check's criterion, publishing a reference, the compact
training log, `pgd estimate`, and the workflow conventions around them (`--lint`, the literal
`--profile slurm`, config/README.md). No training here; the smoke DAG's own check against the
committed smoke reference is in tests/test_workflow_smoke.py.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pgd import workflow as wp
from pgd.engine import training_log
from pgd.reproduce import check, estimate, publish

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, '-m', 'snakemake', '-s', str(REPO / 'Snakefile')]


def write_row(root: Path, table, det, setting, seed, ap, commit='abc123', flags=None,
              **metrics):
    """A run's metrics.json and the row manifest naming it (``flags``: e.g.
    ``{'no_detections': True}``); returns the manifest."""
    from manifest_rows import write_row as write_manifest_row
    doc = {'metrics': {'AP': ap, **metrics},
           'provenance': {'git_commit': commit, 'versions': {'torch': '2.13.0+cpu'},
                          'dataset': {'name': 'synthetic_shapes', 'synthetic': True}},
           **(flags or {})}
    return write_manifest_row(root, table, det, setting, seed, doc)


# ----------------------------------------------------------------------------- the check

def test_criterion_uses_seed_spread_and_floor(tmp_path):
    ref, new = tmp_path / 'ref', tmp_path / 'new'
    for seed, ap in enumerate([10.0, 11.0, 12.0]):        # s_ref = 1.0
        write_row(ref, 'table1', 'atss', 'pgd', seed, ap)
    for seed, ap in enumerate([13.0, 14.0, 15.0]):        # s_new = 1.0, delta = 3.0
        write_row(new, 'table1', 'atss', 'pgd', seed, ap)
    write_row(ref, 'table1', 'atss', 'fgd', 0, 5.0)       # single seed: s = floor (1.0 here)
    write_row(new, 'table1', 'atss', 'fgd', 0, 7.9)       # |delta| 2.9 > 2*sqrt(2) = 2.83
    write_row(ref, 'table1', 'atss', 'student', 0, 3.0)
    write_row(new, 'table1', 'atss', 'student', 0, 5.7)   # 2.7 <= 2.83
    rep = check.compare(check.load_side(ref), check.load_side(new), sd_floor=1.0)
    cells = {(c['setting'], c['metric']): c for c in rep['cells']}
    assert cells[('pgd', 'AP')]['threshold'] == pytest.approx(2 * math.sqrt(2.0))
    assert cells[('pgd', 'AP')]['agrees'] is False          # 3.0 > 2.83
    assert cells[('student', 'AP')]['agrees'] is True
    assert cells[('fgd', 'AP')]['agrees'] is False
    assert rep['verdict'] == 'differs'
    assert {c['setting'] for c in rep['differing']} == {'pgd', 'fgd'}
    # a wider floor makes the single-seed cell agree, the measured one still differs
    rep2 = check.compare(check.load_side(ref), check.load_side(new), sd_floor=1.1)
    assert {c['setting'] for c in rep2['differing']} == {'pgd'}


def test_diverged_rows_compare_as_diverged_not_as_zero(tmp_path):
    ref, new = tmp_path / 'ref', tmp_path / 'new'
    # no detections on both sides (AP 0.0 by definition): the same outcome, agrees
    write_row(ref, 'table1', 'atss', 'fgd', 0, 0.0, flags={'no_detections': True})
    write_row(new, 'table1', 'atss', 'fgd', 0, 0.0, flags={'no_detections': True})
    # a trained reference at 1.5 AP against a run that made no detections: never "0 vs 1.5
    # agrees within the floor", it differs as diverged
    write_row(ref, 'table1', 'atss', 'pgd', 0, 1.5)
    write_row(new, 'table1', 'atss', 'pgd', 0, 0.0, flags={'no_detections': True})
    rep = check.compare(check.load_side(ref), check.load_side(new))
    cells = {c['setting']: c for c in rep['cells']}
    assert cells['fgd']['diverged'] == 'both' and cells['fgd']['agrees'] is True
    assert cells['fgd']['delta'] is None
    assert cells['pgd']['diverged'] == 'reproduced' and cells['pgd']['agrees'] is False
    assert cells['pgd']['reproduced'] == {'diverged': True, 'seeds': [0]}
    assert rep['verdict'] == 'differs'
    text = check.render_markdown({**rep, 'scale': 'x'}, 'x', 'ref', 'new', True)
    assert '| table1 | atss | pgd | AP | 1.50 ± — (1) | diverged (seed 0) | — | — | **differs** |' \
        in text
    assert 'diverged on the reproduced side' in text


def test_report_files_and_no_reference(tmp_path):
    new = tmp_path / 'results' / 'smoke'
    write_row(new, 'table1', 'atss', 'pgd', 0, 4.0, commit='f' * 40)
    out = tmp_path / 'reproduction.md'
    rep = check.check(new, tmp_path / 'nowhere', out, tmp_path / 'reproduction.json',
                      reference_label='results/reference/smoke', synthetic=True)
    assert rep['verdict'] == 'no reference'
    text = out.read_text()
    assert 'No reference for scale `smoke`' in text and 'publish-reference' in text
    assert json.loads((tmp_path / 'reproduction.json').read_text())['verdict'] == 'no reference'
    # with a reference: table of cells, provenance of both sides, verdict
    ref = tmp_path / 'ref'
    write_row(ref, 'table1', 'atss', 'pgd', 0, 4.4, commit='e' * 40)
    rep = check.check(new, ref, out, None, reference_label='results/reference/smoke')
    text = out.read_text()
    assert rep['verdict'] == 'agrees' and '**Verdict: agrees**' in text
    assert 'eeeeeeeeeeee' in text and 'ffffffffffff' in text and '2.13.0+cpu' in text
    assert '| table1 | atss | pgd | AP | 4.40 ± — (1) | 4.00 ± — (1) | -0.40 | 1.41 | agrees |' \
        in text


def test_floor_is_backed_by_the_mini_reference_seed_spread():
    side = check.load_side(REPO / 'results' / 'reference' / 'mini')
    spread = check.pooled_sd(side['cells'])
    assert spread is not None and spread['cells'] >= 10
    # the default floor (0.5 AP) is the pooled seed std of the reference, to 0.1 AP
    assert abs(spread['pooled'] - check.SD_FLOOR) < 0.1


# ----------------------------------------------------------------------------- publishing

def test_publish_copies_small_files_only(tmp_path):
    res = tmp_path / 'results' / 'smoke'
    run = res / 'runs' / 'teacher' / 'shapes' / 'atss_r34_teacher' / 'seed0'
    (run / '20261203_101010' / 'vis_data').mkdir(parents=True)
    for name in ('metrics.json', 'training_log.json', 'final.pth', 'atss_r34_teacher.py',
                 'epoch_1.pth', 'last_checkpoint'):
        (run / name).write_text('{}')
    (run / '20261203_101010' / 'vis_data' / 'scalars.json').write_text('{}')
    write_row(res, 'table1', 'atss', 'teacher', 0, 8.0)
    stale = res / 'metrics' / 'table1' / 'atss' / 'teacher' / 'seed0.json'  # old tagged layout
    stale.parent.mkdir(parents=True)
    stale.write_text('{}')
    for rel in ('tables/table1.md', 'tables/table1.csv', 'tables/table1.tex', 'claims.md',
                'report.md', 'figures/fig_k_sweep.png', 'analysis/mask_out/shapes/a.json',
                'benchmarks/teacher/shapes/atss_r34_teacher/seed0.tsv', 'reproduction.md',
                'reproduction.json', 'data/coco.ok'):
        (res / rel).parent.mkdir(parents=True, exist_ok=True)
        (res / rel).write_text('x')
    ref = tmp_path / 'reference' / 'smoke'
    (ref / 'stale').mkdir(parents=True)
    (ref / 'README.md').write_text('hand-written')
    (ref / 'stale' / 'old.json').write_text('{}')
    info = publish.publish(res, ref)
    got = {p.relative_to(ref).as_posix() for p in ref.rglob('*') if p.is_file()}
    rundir = 'runs/teacher/shapes/atss_r34_teacher/seed0'
    assert got == {f'{rundir}/metrics.json', f'{rundir}/training_log.json',
                   'manifests/table1_atss_teacher_0.json',
                   'runs/fake/table1/atss/teacher/seed0/metrics.json', 'tables/table1.md',
                   'tables/table1.csv', 'tables/table1.tex', 'claims.md', 'report.md',
                   'figures/fig_k_sweep.png', 'analysis/mask_out/shapes/a.json',
                   'benchmarks/teacher/shapes/atss_r34_teacher/seed0.tsv', 'README.md',
                   'PUBLISHED.json'}
    assert (ref / 'README.md').read_text() == 'hand-written'
    assert info['files'] == 12 and not Path(info['source']).is_absolute()
    assert not any(p.name.startswith('.smoke') for p in ref.parent.iterdir())


def test_publish_refuses_an_unfinished_run(tmp_path):
    res = tmp_path / 'results' / 'smoke'
    manifest = write_row(res, 'table1', 'atss', 'teacher', 0, 8.0)
    with pytest.raises(Exception, match='report.md is missing'):
        publish.publish(res, tmp_path / 'ref')
    assert not (tmp_path / 'ref').exists()
    # a manifest naming a metrics file that is not there
    (res / 'report.md').write_text('x')
    (res / 'runs' / 'fake' / 'table1' / 'atss' / 'teacher' / 'seed0' / 'metrics.json').unlink()
    with pytest.raises(Exception, match='missing'):
        publish.publish(res, tmp_path / 'ref')
    assert manifest.is_file() and not (tmp_path / 'ref').exists()


def test_tables_rebuild_from_the_committed_references(tmp_path):
    """Each committed reference tree holds its manifests and runs' metrics: the tables rebuilt
    from it are the committed ones (LGD's row label now comes from pgd.catalog: 'LGD')."""
    from pgd.tables.build import build_all
    for scale in ('mini', 'smoke', 'tuning'):
        ref = REPO / 'results' / 'reference' / scale
        ids = sorted(p.stem for p in (ref / 'tables').glob('*.md'))
        out = tmp_path / scale
        build_all(sorted((ref / 'manifests').glob('*.json')), out, ids)
        for tid in ids:
            for ext in ('md', 'tex', 'csv'):
                got = (out / f'{tid}.{ext}').read_text()
                want = (ref / 'tables' / f'{tid}.{ext}').read_text()
                if tid == 'lgd':
                    want = want.replace('| lgd |', '| LGD |').replace(
                        ',lgd,', ',LGD,').replace('& lgd &', '& LGD &')
                assert got == want, (scale, tid, ext)


# ----------------------------------------------------------------------------- training log

def test_training_log_merges_launches_rounds_and_subsamples(tmp_path):
    first = tmp_path / '20261201_100000' / 'vis_data'
    second = tmp_path / '20261201_110000' / 'vis_data'
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    lines1 = [{'lr': 0.001, 'loss': 3.14159265, 'loss_cls': 1.0, 'grad_norm': 12.3456789,
               'time': 0.5, 'data_time': 0.1, 'memory': 10, 'epoch': 1, 'iter': i, 'step': i}
              for i in range(1, 11)]
    lines1.append({'coco/bbox_mAP': 0.0123456, 'data_time': 0.1, 'time': 0.2, 'step': 1})
    (first / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines1) + '\n{"cut')
    lines2 = [{'lr': 0.002, 'loss': 2.0, 'epoch': 1, 'iter': 10, 'step': 10}]
    (second / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines2))
    doc = training_log.collect(tmp_path)
    assert doc['launches'] == 2 and len(doc['train']) == 10
    assert doc['train'][0] == {'step': 1, 'lr': 0.001, 'loss': 3.142, 'loss_cls': 1.0,
                               'grad_norm': 12.35, 'epoch': 1, 'iter': 1}
    assert doc['train'][-1]['loss'] == 2.0          # the resumed launch wins
    assert doc['val'] == [{'step': 1, 'coco/bbox_mAP': 0.01235}]
    small = training_log.collect(tmp_path, max_points=4)
    assert [e['step'] for e in small['train']] == [1, 4, 7, 10] and small['subsampled'] == 10
    assert training_log.collect(tmp_path / 'empty') == {
        'source': 'MMEngine vis_data/scalars.json (LoggerHook interval)', 'launches': 0,
        'train': [], 'subsampled': None, 'val': []}


# ----------------------------------------------------------------------------- estimate

def test_estimate_smoke_from_the_committed_reference_benchmarks(tmp_path):
    out = tmp_path / 'estimate.json'
    res = subprocess.run([sys.executable, '-m', 'pgd', 'estimate', '--config',
                          str(REPO / 'config' / 'smoke.yaml'), '--cores', '2', '--json',
                          str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.read_text())
    plan = wp.load_plan(REPO / 'config' / 'smoke.yaml')
    c = plan.counts()
    rules = doc['rules']
    assert rules['train_teacher']['jobs'] == c['teacher']
    assert rules['distill']['jobs'] == c['distill']
    assert rules['evaluate']['jobs'] == c['evaluate']
    assert rules['row_manifest']['jobs'] == c['manifests']
    assert rules['reproduction']['jobs'] == 1
    # the committed smoke reference has a benchmark for every training job
    for rule in ('train_teacher', 'train_student', 'distill', 'distill_teacher_free'):
        assert rules[rule]['sources'] == {'measured': rules[rule]['jobs']}, rule
    assert doc['cpu_h'] > 0 and doc['gpu_h'] == 0 and doc['unknown_jobs'] == 0
    # 2 cores: no faster than half the serial time, no slower than all of it
    serial = sum(r['wall_s'] for r in rules.values())
    assert serial / 2 - 1 <= doc['wall_s'] <= serial + 1
    assert doc['wall_s'] >= doc['critical_path_s'] - 1
    assert set(doc['tables']) == set(plan.tables)
    assert 'per table' in res.stdout and 'measured' in res.stdout


def test_estimate_measured_sums_the_reference_benchmarks_per_rule(tmp_path):
    """`--measured` is the per-rule cost table of the published mini run: its totals equal
    the benchmark files summed here independently, and a job whose benchmark is unreadable
    is counted apart, not as 0 s."""
    from pgd.reproduce.measured import measured_by_rule
    ref = REPO / 'results' / 'reference' / 'mini'
    out = tmp_path / 'estimate.json'
    res = subprocess.run([sys.executable, '-m', 'pgd', 'estimate', '--cores', '2',
                          '--measured', '--json', str(out)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.read_text())['measured']
    cpu = wall = 0.0
    files = sorted((ref / 'benchmarks').rglob('*.tsv'))
    for f in files:
        head, row = f.read_text().strip().splitlines()[:2]
        cells = dict(zip(head.split('\t'), row.split('\t')))
        cpu += float(cells['cpu_time'])
        wall += float(cells['s'])
    assert doc['total']['jobs'] == len(files)
    assert doc['total']['cpu_s'] == pytest.approx(cpu)
    assert doc['total']['wall_s'] == pytest.approx(wall)
    assert doc['rules']['distill']['jobs'] == len(list((ref / 'benchmarks' / 'distill')
                                                       .rglob('*.tsv')))
    assert 'max RSS MB' in res.stdout and str(REPO) not in res.stdout
    # a broken benchmark file is not a measurement
    broken = tmp_path / 'ref' / 'benchmarks'
    (broken / 'teacher').mkdir(parents=True)
    (broken / 'teacher' / 'x.tsv').write_text('s\th:m:s\ncrashed\t-\n')
    jobs = {'t': estimate.Job('train_teacher', 't', bench='teacher/x'),
            'm': estimate.Job('table', 'm')}
    got = measured_by_rule(jobs, broken)
    assert got['rules'] == {} and got['unbenchmarked'] == {'train_teacher': 1, 'table': 1}


def test_estimate_calls_a_benchmark_of_other_settings_stale(tmp_path):
    """A reference run trained under another fingerprint (an edited config, a new regime)
    still gives its time, but as 'stale', and the estimate says how many such jobs it has."""
    import shutil
    ref = tmp_path / 'ref'
    shutil.copytree(REPO / 'results' / 'reference' / 'smoke', ref)
    plan = wp.load_plan(REPO / 'config' / 'smoke.yaml')
    fresh = estimate.estimate(plan, reference=ref)
    assert fresh['stale_jobs'] == 0
    run = next(r for r in plan.runs_of('distill') if r.method == 'fgd')
    metrics = ref / 'runs' / run.rel / 'metrics.json'
    doc = json.loads(metrics.read_text())
    # recorded by the evaluate rule (pgd test --fingerprint)
    assert doc['provenance']['run_fingerprint'] == plan.fingerprint(run)
    doc['provenance']['run_fingerprint'] = '0' * 16
    metrics.write_text(json.dumps(doc))
    edited = estimate.estimate(plan, reference=ref)
    assert edited['stale_jobs'] == 1
    assert edited['rules']['distill']['sources'] == {
        'measured': fresh['rules']['distill']['jobs'] - 1, 'stale': 1}
    assert edited['wall_s'] == fresh['wall_s']  # the time is still used, only labelled
    assert 'stale' in estimate.render(edited, 'smoke')


def test_estimate_paper_uses_the_stated_assumptions(tmp_path):
    res = subprocess.run([sys.executable, '-m', 'pgd', 'estimate', '--scale', 'paper',
                          '--gpus', '16', '--reference', str(tmp_path / 'none')],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'ASSUMED' in res.stdout and '16 gpus' in res.stdout
    plan = wp.load_plan(REPO / 'config' / 'paper.yaml')
    est = yaml.safe_load((REPO / 'config' / 'paper.yaml').read_text())['estimate']
    jobs = estimate.build_jobs(plan)
    estimate.assign_seconds(jobs, {}, est)
    teacher = next(j for j in jobs.values() if j.key == 'train:teacher/coco/atss_r101_teacher/seed0')
    assert teacher.source == 'assumed'
    assert teacher.seconds == pytest.approx(est['seconds_per_iter']['default']['teacher']
                                            * est['iterations']['coco']['teacher'])
    assert teacher.gpu_h == pytest.approx(teacher.seconds * 8 / 3600)


def test_schedule_respects_dependencies_and_capacity():
    jobs = {'a': estimate.Job('x', 'a', seconds=10), 'b': estimate.Job('x', 'b', seconds=10),
            'c': estimate.Job('x', 'c', deps=['a', 'b'], seconds=5)}
    assert estimate.simulate(jobs, 1) == 25
    assert estimate.simulate(jobs, 2) == 15
    assert estimate.critical_path(jobs) == 15


# ----------------------------------------------------------------------------- conventions

@pytest.mark.parametrize('scale', ['mini', 'smoke', 'paper', 'tuning'])
def test_snakemake_lint_is_clean(tmp_path, scale):
    res = subprocess.run(SNAKEMAKE + ['--directory', str(tmp_path), '--lint', '--config',
                                      f'scale={scale}'],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert 'Lints for' not in res.stdout + res.stderr


def test_literal_profile_slurm_command_works_from_the_repo_root(tmp_path):
    # exactly what README says, plus -n and a scratch --directory; the profile resolves via
    # ./slurm, a link to workflow/profiles/slurm (one source)
    assert os.path.realpath(REPO / 'slurm') == str((REPO / 'workflow/profiles/slurm').resolve())
    res = subprocess.run(['snakemake', '--profile', 'slurm', '-n', '--directory', str(tmp_path),
                          '--config', 'scale=smoke'], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ,
                                           'PATH': f"{Path(sys.executable).parent}:"
                                                   f"{os.environ.get('PATH', '')}"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert 'no profile.yaml' not in out and 'rule train_teacher' in out


def test_dry_run_says_where_results_go_and_plans_training(tmp_path):
    res = subprocess.run(SNAKEMAKE + ['-n', '--directory', str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert '[pgd] scale mini: outputs -> results/mini/' in res.stderr
    assert 'train_teacher' in res.stdout + res.stderr and 'reproduction' in res.stdout + res.stderr


def test_config_readme_describes_every_key():
    schema = yaml.safe_load((REPO / 'workflow/schemas/config.schema.yaml').read_text())
    text = (REPO / 'config' / 'README.md').read_text()
    keys = set(schema['properties'])
    keys |= set(schema['$defs']['table']['properties'])
    keys |= set(schema['$defs']['dataset']['properties'])
    keys |= set(schema['$defs']['resource']['properties'])
    keys |= set(schema['properties']['estimate']['properties'])
    missing = sorted(k for k in keys if f'`{k}' not in text and f'{k}`' not in text
                     and f'.{k}' not in text)
    assert not missing, missing
