"""guard-workdir never destroys a finished model before the new run is known to start."""
from __future__ import annotations

import pytest

from pgd import workflow as wp
from pgd.engine.workdir import drop_superseded


def finished_run(wd):
    wd.mkdir(parents=True, exist_ok=True)
    for name, text in (('epoch_5.pth', 'ckpt5'), ('epoch_6.pth', 'ckpt6'),
                       ('final.pth', 'model A'), ('last_checkpoint', str(wd / 'epoch_6.pth')),
                       ('resumes.json', '{"resumes": []}')):
        (wd / name).write_text(text)


def test_changed_parameters_move_the_old_run_aside_not_away(tmp_path):
    wd = tmp_path / 'run'
    assert not wp.guard_workdir(wd, 'aaa')
    finished_run(wd)
    assert not wp.guard_workdir(wd, 'aaa')  # same parameters: keep everything (resume)
    assert (wd / 'final.pth').read_text() == 'model A'

    assert wp.guard_workdir(wd, 'bbb')
    old = wd / 'superseded-aaa'
    assert sorted(p.name for p in old.iterdir()) == [
        'epoch_5.pth', 'epoch_6.pth', 'final.pth', 'last_checkpoint', 'resumes.json']
    assert (old / 'final.pth').read_text() == 'model A'
    # nothing left for pgd train to resume from
    assert not list(wd.glob('*.pth')) and not (wd / 'last_checkpoint').exists()
    assert (wd / wp.FINGERPRINT_FILE).read_text().strip() == 'bbb'


def test_crashed_new_run_then_old_parameters_restore_the_old_model(tmp_path):
    """A misspelt option crashes the new run before any checkpoint: going back to the old
    parameters finds the old model again, and the crashed run's files are set aside."""
    wd = tmp_path / 'run'
    wp.guard_workdir(wd, 'aaa')
    finished_run(wd)
    wp.guard_workdir(wd, 'bbb')
    (wd / 'resumes.json').write_text('{"resumes": []}')  # all the crashed run left
    wp.guard_workdir(wd, 'aaa')
    assert (wd / 'final.pth').read_text() == 'model A'
    assert (wd / 'last_checkpoint').is_file() and (wd / 'epoch_6.pth').is_file()
    assert not (wd / 'superseded-aaa').exists()
    assert sorted(p.name for p in (wd / 'superseded-bbb').iterdir()) == ['resumes.json']


def test_superseded_runs_are_dropped_once_the_new_run_saved(tmp_path):
    wd = tmp_path / 'run'
    wp.guard_workdir(wd, 'aaa')
    finished_run(wd)
    wp.guard_workdir(wd, 'bbb')
    (wd / 'epoch_1.pth').write_text('new run, epoch 1')
    dropped = drop_superseded(wd)
    assert [p.name for p in dropped] == ['superseded-aaa']
    assert not (wd / 'superseded-aaa').exists() and (wd / 'epoch_1.pth').exists()


@pytest.mark.slow
def test_train_drops_the_superseded_folder_after_its_first_checkpoint(tiny_shapes, tmp_path):
    from conftest import run_pgd
    wd = tmp_path / 'run'
    wp.guard_workdir(wd, 'aaa')
    finished_run(wd)
    wp.guard_workdir(wd, 'bbb')
    # a misspelt option: the new run fails before training, the old model stays
    bad = run_pgd('train', 'mini/atss_r18_student', '--work-dir', wd, '--data-root',
                  tiny_shapes, '--device', 'cpu', '--cfg-options', 'model.bbox_head.typo=1',
                  'train_cfg.max_epochs=1')
    assert bad.returncode != 0
    assert (wd / 'superseded-aaa' / 'final.pth').read_text() == 'model A'
    good = run_pgd('train', 'mini/atss_r18_student', '--work-dir', wd, '--data-root',
                   tiny_shapes, '--device', 'cpu', '--cfg-options', 'train_cfg.max_epochs=1',
                   'train_cfg.val_begin=100')
    assert good.returncode == 0, good.stdout[-3000:]
    assert (wd / 'final.pth').is_file() and not (wd / 'superseded-aaa').exists()
