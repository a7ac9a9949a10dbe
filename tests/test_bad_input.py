"""What bad input gets (docs/bad-input.md): one line naming the bad value and what is allowed,
a non-zero exit before any long work starts. Every row of that table names a test here or in
tests/test_data_check.py.

The CLI cases run ``pgd.cli.main`` in-process (no subprocess: each would re-import torch);
all of them stop before a model is built.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest

from pgd.cli import main
from pgd.errors import UserError

STUDENT = ['--student', 'mini/atss_r18_student', '--teacher', 'mini/atss_r34_teacher']


@pytest.fixture
def fake_ckpt(tmp_path) -> Path:
    """A file standing in for a teacher checkpoint: every case here fails before it is read."""
    path = tmp_path / 'teacher.pth'
    path.write_bytes(b'not read')
    return path


def run_cli(capsys, *argv):
    """``python -m pgd ARGV`` in-process: (exit code, stderr)."""
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith('error: ') or 'error:' in lines[0], err
    return lines[0]


def distill(capsys, tmp_path, ckpt, *extra, method='pgd'):
    return run_cli(capsys, 'distill', *STUDENT, '--teacher-ckpt', ckpt, '--method', method,
                   '--work-dir', tmp_path / 'work', '--device', 'cpu', *extra)


# ----------------------------------------------------------------------------- 1. options

@pytest.mark.parametrize('option, allowed', [
    ('k=0', 'k must be an integer > 0'),
    ('k=-5', 'k must be an integer > 0'),
    ('k=2.7', 'k must be an integer > 0'),
    ('alpha=-1', 'alpha must be a number >= 0'),
    ('alpha=abc', 'alpha must be a number >= 0'),
    ('branches=[neck,head]', 'branches must be a list [a,b] of one of neck, cls, reg'),
    ('fg_strategy=boxx', 'fg_strategy must be one of pgw, box'),
    ('semantics=papr', 'semantics must be one of official, paper'),
])
def test_cli_rejects_bad_option_values(capsys, tmp_path, fake_ckpt, option, allowed):
    rc, err = distill(capsys, tmp_path, fake_ckpt, '--loss-options', option)
    line = one_error_line(err)
    assert rc == 2
    key, value = option.split('=', 1)
    assert f'loss option {key}=' in line and allowed in line
    assert not (tmp_path / 'work').exists()  # nothing written, nothing trained


def test_cli_rejects_unknown_option_key_listing_known(capsys, tmp_path, fake_ckpt):
    rc, err = distill(capsys, tmp_path, fake_ckpt, '--loss-options', 'kk=9')
    line = one_error_line(err)
    assert rc == 2
    assert 'unknown loss option kk for method pgd' in line
    assert 'known: alpha, beta, branches' in line and ' k,' in line


def test_cli_rejects_options_of_another_method(capsys, tmp_path, fake_ckpt):
    # inherit has no loss: k=9 used to be accepted and silently ignored
    rc, err = distill(capsys, tmp_path, fake_ckpt, '--loss-options', 'k=9', method='inherit')
    assert rc == 2
    assert 'unknown loss option k for method inherit (known: loss_scale)' in one_error_line(err)


def test_cli_rejects_bad_loss_scale(capsys, tmp_path, fake_ckpt):
    rc, err = distill(capsys, tmp_path, fake_ckpt, '--loss-options', 'loss_scale=0')
    assert rc == 2 and 'loss_scale must be a positive number, got 0' in one_error_line(err)


def test_known_options_come_from_the_loss_signatures():
    from pgd.method_options import known_options
    assert {'k', 'alpha', 'branches', 'loss_scale'} <= known_options('pgd')
    assert 'student_channels' not in known_options('fgd')  # filled in by the distiller
    # LD: ld_variant, its head options and the KL keys (T included) stay accepted
    assert {'ld_variant', 'vlr_alpha', 'vlr_topk', 'T', 'loss_weight'} <= known_options('ld')
    # LGD: exactly what pgd.engine.distill_lgd.lgd_params accepts
    assert {'distill_start_iter', 'freeze_backbone_iters', 'num_heads'} <= known_options('lgd')
    assert known_options('inherit') == {'loss_scale'}


def test_ld_keeps_accepting_its_kl_temperature():
    from pgd.method_options import check_method_options
    check_method_options('ld', {'T': 5, 'ld_variant': 'main'})  # no exception
    with pytest.raises(UserError, match='ld_variant must be one of vlr, main'):
        check_method_options('ld', {'ld_variant': 'mian'})


def test_large_k_is_allowed_with_the_effective_k_logged_once():
    import logging

    from mmengine.logging import MMLogger
    from test_pgd_loss import GTS, make_batch

    from pgd.distill.losses import PGDLoss
    from pgd.method_options import check_method_options
    check_method_options('pgd', {'k': 100000})  # allowed ...
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        batch = make_batch(GTS, seed=1)
        loss = PGDLoss(k=100000)
        loss(batch)
        loss(batch)
    finally:
        logger.removeHandler(handler)
    n = batch.points.shape[0]
    assert [m for m in seen if 'effective K' in m] == [
        f'PGD: K=100000 exceeds the {n} candidate locations of the batch; effective K = {n}']


def _smoke_config():
    from pgd.workflow import load_yaml
    from pgd.paths import REPO_ROOT
    return load_yaml(REPO_ROOT / 'config' / 'smoke.yaml')


@pytest.mark.parametrize('edit, key', [
    (lambda c: c.setdefault('method_defaults', {}).setdefault('pgd', {}).update(kk=9),
     'method_defaults.pgd.kk'),
    (lambda c: c.setdefault('detector_method_defaults', {}).setdefault('fcos', {})
     .setdefault('pgd', {}).update(alpah=0.1), 'detector_method_defaults.fcos.pgd.alpah'),
    (lambda c: c['tables']['table5']['ablation'].update(variants={'box': {'fg_stratgy': 'box'}}),
     'tables.table5.ablation.variants.box.fg_stratgy'),
    (lambda c: c['tables']['table6a']['ablation'].update(sweep={'kk': [1, 2]}),
     'tables.table6a.ablation.sweep.kk'),
])
def test_plan_rejects_unknown_option_keys(edit, key):
    from pgd.workflow import ConfigError, Plan
    config = _smoke_config()
    edit(config)
    with pytest.raises(ConfigError) as info:
        Plan(config)
    msg = str(info.value)
    assert msg.startswith(f'{key}: unknown loss option') and '(known: ' in msg
    assert '\n' not in msg


def test_plan_accepts_the_shipped_configs():
    from pgd.workflow import Plan
    Plan(copy.deepcopy(_smoke_config()))  # no exception: every shipped key is known


# ----------------------------------------------------------------------------- 2. names

@pytest.mark.parametrize('method', ['../../../x', '/tmp/x', 'PGD', 'pgd.py'])
def test_method_must_be_a_plain_name(capsys, tmp_path, fake_ckpt, method):
    rc, err = distill(capsys, tmp_path, fake_ckpt, method=method)
    line = one_error_line(err)
    assert rc == 2 and f'bad method name {method!r}' in line and 'known: defeat' in line


def test_method_outside_the_folder_is_never_executed(tmp_path, monkeypatch):
    """A Python file reachable by ``../`` from config/distill is refused, not run."""
    from pgd.method_options import METHOD_ROOT, check_method_name
    evil = Path(os.path.relpath(tmp_path / 'evil', METHOD_ROOT))
    (tmp_path / 'evil.py').write_text("raise SystemExit('executed!')\n")
    with pytest.raises(UserError, match='bad method name'):
        check_method_name(str(evil))


def test_unknown_method(capsys, tmp_path, fake_ckpt):
    rc, err = distill(capsys, tmp_path, fake_ckpt, method='foo')
    assert rc == 2
    assert "unknown distillation method 'foo' (known: defeat" in one_error_line(err)


@pytest.mark.parametrize('name', ['mini/../../distill/pgd', '../config/detectors/mini/x',
                                  '/etc/passwd', 'mini/atss_r18_student/..'])
def test_config_name_never_leaves_config_detectors(name):
    from pgd.engine.config_utils import resolve_config
    with pytest.raises(UserError, match='bad detector/config name'):
        resolve_config(name)


def test_config_given_as_an_existing_py_path_is_used(tmp_path):
    from pgd.engine.config_utils import resolve_config
    cfg = tmp_path / 'mine.py'
    cfg.write_text('x = 1\n')
    assert resolve_config(str(cfg)) == cfg
    with pytest.raises(UserError, match='config file not found'):
        resolve_config(str(tmp_path / 'missing.py'))


def test_unknown_detector_config(capsys, tmp_path):
    rc, err = run_cli(capsys, 'train', 'mini/nope', '--work-dir', tmp_path / 'w')
    assert rc == 2
    assert "unknown detector/config 'mini/nope'" in one_error_line(err)


def test_teacher_student_type_mismatch(capsys, tmp_path, fake_ckpt):
    rc, err = run_cli(capsys, 'distill', '--student', 'mini/atss_r18_student', '--teacher',
                      'mini/fcos_r34_teacher', '--teacher-ckpt', fake_ckpt, '--method', 'pgd',
                      '--work-dir', tmp_path / 'w', '--device', 'cpu')
    assert rc == 2
    assert 'teacher and student must be the same detector type, got FCOS and ATSS' in \
        one_error_line(err)


def test_missing_teacher_checkpoint(capsys, tmp_path):
    rc, err = distill(capsys, tmp_path, tmp_path / 'nope.pth')
    assert rc == 2 and 'teacher checkpoint not found' in one_error_line(err)


def test_teacher_missing_for_a_method_that_needs_one(capsys, tmp_path):
    rc, err = run_cli(capsys, 'distill', '--student', 'mini/atss_r18_student', '--method',
                      'fgd', '--work-dir', tmp_path / 'w', '--device', 'cpu')
    assert rc == 2 and 'method fgd needs --teacher and --teacher-ckpt' in one_error_line(err)


# ----------------------------------------------------------------------------- other CLI values

def test_cfg_options_item_without_equals(capsys, tmp_path):
    rc, err = run_cli(capsys, 'train', 'mini/atss_r18_student', '--work-dir', tmp_path / 'w',
                      '--cfg-options', 'train_cfg.max_epochs=1', 'foo')
    assert rc == 2
    assert "take KEY=VALUE items, got 'foo'" in one_error_line(err)


@pytest.mark.parametrize('seed', ['-1', str(2 ** 32)])
def test_seed_out_of_range(capsys, tmp_path, seed):
    rc, err = run_cli(capsys, 'train', 'mini/atss_r18_student', '--work-dir', tmp_path / 'w',
                      '--seed', seed)
    assert rc == 2
    assert f'--seed must be an integer in [0, 2**32 - 1], got {seed}' in one_error_line(err)


def test_seed_not_an_integer(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(['train', 'mini/atss_r18_student', '--work-dir', str(tmp_path / 'w'),
              '--seed', 'abc'])
    assert info.value.code == 2
    assert "argument --seed: invalid int value: 'abc'" in capsys.readouterr().err


def test_unknown_dataset_kind_for_make_data(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(['make-data', '--kind', 'foo', '--out', str(tmp_path / 'd')])
    assert info.value.code == 2 and "invalid choice: 'foo'" in capsys.readouterr().err


def test_unknown_dataset_kind_in_config():
    from pgd.workflow import ConfigError, Plan
    config = _smoke_config()
    name = next(iter(config['datasets']))
    config['datasets'][name]['kind'] = 'coco'
    with pytest.raises(ConfigError, match=rf'^datasets\.{name}\.kind: '):
        Plan(config)


def test_table_on_an_unknown_dataset():
    from pgd.workflow import ConfigError, Plan
    config = _smoke_config()
    tid = next(iter(config['tables']))
    config['tables'][tid]['dataset'] = 'imagenet'
    with pytest.raises(ConfigError, match=rf"^tables\.{tid}\.dataset: unknown dataset "
                                          r"'imagenet' \(defined: "):
        Plan(config)


def test_missing_data_root(capsys, tmp_path):
    rc, err = run_cli(capsys, 'train', 'mini/atss_r18_student', '--work-dir', tmp_path / 'w',
                      '--data-root', tmp_path / 'nodata', '--device', 'cpu')
    assert rc == 2 and 'annotation file not found' in one_error_line(err)


# ----------------------------------------------------------------------------- 3. data, via train/test

@pytest.fixture
def bad_data(tiny_shapes, tmp_path) -> Path:
    """A copy of the tiny dataset whose *val* split has one zero-width box."""
    root = tmp_path / 'data'
    shutil.copytree(tiny_shapes, root)
    ann = root / 'annotations' / 'synthetic_shapes_val.json'
    coco = json.loads(ann.read_text())
    coco['annotations'][0]['bbox'][2] = 0
    ann.write_text(json.dumps(coco))
    return root


def test_train_refuses_bad_val_data_before_the_runner(capsys, tmp_path, bad_data):
    rc, err = run_cli(capsys, 'train', 'mini/atss_r18_student', '--work-dir', tmp_path / 'w',
                      '--data-root', bad_data, '--device', 'cpu')
    line = one_error_line(err)
    assert rc == 2
    assert 'synthetic_shapes_val.json: 1 boxes with width or height below 1 px' in line
    assert '--repair' in line
    assert not (tmp_path / 'w').exists() or not any((tmp_path / 'w').iterdir())


def test_test_refuses_the_same_bad_data(capsys, tmp_path, bad_data, fake_ckpt):
    rc, err = run_cli(capsys, 'test', 'mini/atss_r18_student', fake_ckpt, '--out',
                      tmp_path / 'm.json', '--data-root', bad_data, '--device', 'cpu')
    assert rc == 2
    assert 'synthetic_shapes_val.json: 1 boxes with width or height below 1 px' in \
        one_error_line(err)
    assert not (tmp_path / 'm.json').exists()


def test_wrong_dataset_for_the_config(capsys, tmp_path, tiny_shapes):
    root = tmp_path / 'data'
    shutil.copytree(tiny_shapes, root)
    for split in ('train', 'val'):
        ann = root / 'annotations' / f'synthetic_shapes_{split}.json'
        coco = json.loads(ann.read_text())
        for cat in coco['categories']:
            cat['name'] = 'person_' + cat['name']
        ann.write_text(json.dumps(coco))
    rc, err = run_cli(capsys, 'train', 'mini/atss_r18_student', '--work-dir', tmp_path / 'w',
                      '--data-root', root, '--device', 'cpu')
    assert rc == 2 and 'is a class of the config' in one_error_line(err)


# ----------------------------------------------------------------------------- 4. writable outputs

def test_unwritable_work_dir_for_train(capsys, tiny_shapes):
    rc, err = run_cli(capsys, 'train', 'mini/atss_r18_student', '--work-dir', '/dev/null/x',
                      '--data-root', tiny_shapes, '--device', 'cpu')
    assert rc == 2 and 'cannot write to output folder /dev/null/x' in one_error_line(err)


def test_unwritable_work_dir_for_distill(capsys, fake_ckpt, tiny_shapes):
    rc, err = run_cli(capsys, 'distill', *STUDENT, '--teacher-ckpt', fake_ckpt, '--method',
                      'pgd', '--work-dir', '/dev/null/x', '--data-root', tiny_shapes,
                      '--device', 'cpu')
    assert rc == 2 and 'cannot write to output folder /dev/null/x' in one_error_line(err)


def test_unwritable_out_for_test_before_evaluation(capsys, tiny_shapes, fake_ckpt):
    rc, err = run_cli(capsys, 'test', 'mini/atss_r18_student', fake_ckpt, '--out',
                      '/dev/null/x/metrics.json', '--data-root', tiny_shapes, '--device', 'cpu')
    assert rc == 2 and 'cannot write to output folder /dev/null/x' in one_error_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_read_only_work_dir(tmp_path):
    from pgd.engine.config_utils import check_writable
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match='cannot write to output folder .*ro'):
            check_writable(ro)
    finally:
        ro.chmod(0o700)


def test_writable_check_leaves_nothing_behind(tmp_path):
    from pgd.engine.config_utils import check_writable
    check_writable(tmp_path / 'new' / 'dir')
    assert (tmp_path / 'new' / 'dir').is_dir()
    assert list((tmp_path / 'new' / 'dir').iterdir()) == []


# ----------------------------------------------------------------------------- 5. provenance

def test_provenance_paths_are_never_absolute(tmp_path):
    from pgd.engine.config_utils import dataset_info, load_config, retarget_data_root
    from pgd.provenance import REPO_ROOT, portable_path
    # inside the checkout: repo-relative
    assert portable_path(REPO_ROOT / 'results' / 'x' / 'final.pth', tmp_path) == \
        'results/x/final.pth'
    # outside: relative to the given base (the metrics file's folder / the data root)
    assert portable_path(tmp_path / 'run' / 'final.pth', tmp_path / 'run') == 'final.pth'
    other = portable_path(tmp_path / 'a' / 'final.pth', tmp_path / 'b')
    assert other == '../a/final.pth' and not os.path.isabs(other)
    _, cfg = load_config('mini/atss_r18_student')
    retarget_data_root(cfg, str(tmp_path / 'data'))
    assert dataset_info(cfg)['val_ann_file'] == 'annotations/synthetic_shapes_val.json'


# ----------------------------------------------------------------------------- 6. counts

@pytest.mark.parametrize('argv, line', [
    (['estimate', '--cores', '0'], '--cores must be at least 1, got 0'),
    (['estimate', '--gpus', '-2'], '--gpus must be at least 1, got -2'),
    (['training-log', '.', '--out', 'OUT', '--max-points', '1'],
     '--max-points must be at least 2, got 1'),
])
def test_count_options_must_be_positive(capsys, tmp_path, argv, line):
    out = tmp_path / 'log.json'
    rc, err = run_cli(capsys, *[str(out) if a == 'OUT' else a for a in argv])
    assert rc != 0 and line in one_error_line(err)
    assert not out.exists()


def test_training_log_of_a_missing_run_folder(capsys, tmp_path):
    out = tmp_path / 'training_log.json'
    rc, err = run_cli(capsys, 'training-log', tmp_path / 'nope', '--out', out)
    assert rc != 0 and 'run folder' in one_error_line(err) and 'does not exist' in err
    assert not out.exists()
