"""The whole SMOKE-scale workflow, end to end on CPU, in a scratch directory.

Every rule type runs once: synthetic data, teachers, students, every distillation method,
evaluation, tagging, all nine paper tables plus the LGD table, figures, the claim check, the
Fig. 2/3 analyses, the summary, and `snakemake --report`.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, '-m', 'snakemake', '--snakefile', str(REPO / 'Snakefile')]
TABLES = ('table1', 'table2', 'table3', 'table4', 'table5', 'table6a', 'table6b', 'table7',
          'lgd')
FIGURES = ('fig_table1_gains', 'fig_k_sweep', 'fig_alpha_sweep', 'fig3_mask_out')

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
    work = tmp_path_factory.mktemp('smoke')
    res = subprocess.run(SNAKEMAKE + ['--cores', '2', '--directory', str(work), '--config',
                                      'scale=smoke'],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=1800)
    assert res.returncode == 0, res.stdout[-5000:]
    return work, res.stdout


def test_every_table_is_written_in_three_formats(smoke_run):
    work, _ = smoke_run
    for table in TABLES:
        for ext in ('md', 'tex', 'csv'):
            path = work / 'results' / 'smoke' / 'tables' / f'{table}.{ext}'
            assert path.is_file() and path.stat().st_size > 0, path
    table1 = (work / 'results/smoke/tables/table1.md').read_text()
    assert 'SYNTHETIC' in table1 and 'Ours (PGD)' in table1


def test_figures_claims_and_analyses(smoke_run):
    work, _ = smoke_run
    out = work / 'results' / 'smoke'
    for stem in FIGURES:
        assert (out / 'figures' / f'{stem}.png').is_file()
        assert (out / 'figures' / f'{stem}.pdf').is_file()
    assert list((out / 'figures' / 'fig2_quality').rglob('*.png'))
    claims = (out / 'claims.md').read_text()
    assert 'SYNTHETIC' in claims and 'K = 30' in claims


def test_metrics_carry_provenance(smoke_run):
    import json
    work, _ = smoke_run
    files = list((work / 'results' / 'smoke' / 'runs').rglob('metrics.json'))
    assert len(files) >= 20
    for f in files:
        prov = json.loads(f.read_text())['provenance']
        assert prov['dataset']['synthetic'] is True and prov['git_commit'] and 'seed' in prov


def test_rerun_has_nothing_to_do_and_report_builds(smoke_run):
    work, _ = smoke_run
    dry = subprocess.run(SNAKEMAKE + ['-n', '--directory', str(work), '--config', 'scale=smoke'],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=600)
    assert dry.returncode == 0 and 'Nothing to be done' in dry.stdout, dry.stdout[-3000:]
    report = work / 'report.html'
    res = subprocess.run(SNAKEMAKE + ['--directory', str(work), '--config', 'scale=smoke',
                                      '--report', str(report)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:]
    assert report.stat().st_size > 100_000


# ----------------------------------------------------------------------------- reproduction

def test_reproduction_check_agrees_with_the_committed_smoke_reference(smoke_run):
    """The DAG ends with a comparison against results/reference/smoke/ (committed, made by
    `pgd publish-reference --scale smoke` from a smoke run): a rerun reproduces it."""
    import json
    work, _ = smoke_run
    out = work / 'results' / 'smoke'
    rep = json.loads((out / 'reproduction.json').read_text())
    assert rep['reference'] == 'results/reference/smoke'
    assert rep['verdict'] == 'agrees', [
        (c['table'], c['detector'], c['setting'], c['metric'], c['delta'])
        for c in rep['differing']]
    tables = {c['table'] for c in rep['cells']}
    assert set(TABLES) <= tables and len(rep['cells']) >= 50
    text = (out / 'reproduction.md').read_text()
    assert '**Verdict: agrees**' in text and 'SYNTHETIC' in text
    assert str(work) not in text and str(REPO) not in text  # no machine paths


def test_perturbed_reference_is_reported_as_differing(smoke_run, tmp_path):
    import json
    import shutil
    work, _ = smoke_run
    ref = tmp_path / 'reference'
    shutil.copytree(REPO / 'results' / 'reference' / 'smoke', ref)
    # The 1-epoch smoke runs make no detections (compared as "diverged" on both sides), so the
    # perturbed reference gets numbers for one run: one side diverged, the other not -> differs.
    manifest = json.loads((ref / 'manifests' / 'table1.json').read_text())
    entry = next(r for r in manifest['rows']
                 if (r['detector'], r['setting'], r['seed']) == ('atss', 'pgd', 0))
    row = ref / entry['metrics']
    doc = json.loads(row.read_text())
    doc['metrics']['AP'] = doc['metrics']['AP'] + 40.0
    doc['no_detections'] = False
    row.write_text(json.dumps(doc))
    res = subprocess.run([sys.executable, '-m', 'pgd', 'check-reproduction', '--results',
                          str(work / 'results' / 'smoke'), '--reference', str(ref),
                          '--out', str(tmp_path / 'r.md'), '--json', str(tmp_path / 'r.json'),
                          '--fail-on-differ'],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    rep = json.loads((tmp_path / 'r.json').read_text())
    assert rep['verdict'] == 'differs'
    cells = {(c['table'], c['detector'], c['setting'], c['metric']) for c in rep['differing']}
    assert ('table1', 'atss', 'pgd', 'AP') in cells
    # only rows read from the perturbed run differ (other tables may share that run)
    shared = {(r['table'], r['detector'], r['setting'])
              for m in (ref / 'manifests').glob('*.json')
              for r in json.loads(m.read_text())['rows'] if r['metrics'] == entry['metrics']}
    assert {c[:3] for c in cells} <= shared
    assert 'table1 / atss / pgd / AP' in (tmp_path / 'r.md').read_text()


def test_training_logs_are_published_and_job_logs_show_eta(smoke_run):
    import json
    work, _ = smoke_run
    runs = work / 'results' / 'smoke' / 'runs'
    ckpts = list(runs.rglob('final.pth'))
    assert ckpts
    for ck in ckpts:
        log = json.loads((ck.parent / 'training_log.json').read_text())
        assert log['train'], ck
        assert all('loss' in e and 'lr' in e for e in log['train'])
        assert (ck.parent / 'training_log.json').stat().st_size < 200_000
    teacher_log = work / 'logs' / 'smoke' / 'teacher' / 'shapes' / 'atss_r34_teacher' / 'seed0.log'
    assert 'eta:' in teacher_log.read_text()
