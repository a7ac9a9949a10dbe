"""``pgd check-data`` (pgd/data/check.py): each kind of bad data is found, counted, refused
with examples, or removed by ``--repair`` with a report; the generator's data passes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pgd.cli import main
from pgd.data.check import check_split, report_path
from pgd.errors import UserError


@pytest.fixture
def data(tiny_shapes, tmp_path) -> Path:
    root = tmp_path / 'data'
    shutil.copytree(tiny_shapes, root)
    return root


def val_json(root: Path) -> Path:
    return root / 'annotations' / 'synthetic_shapes_val.json'


def edit(root: Path, fn) -> Path:
    ann = val_json(root)
    coco = json.loads(ann.read_text())
    fn(coco)
    ann.write_text(json.dumps(coco))  # NaN is written as the JSON token NaN
    return ann


def test_generated_data_passes(tiny_shapes, capsys):
    assert main(['check-data', '--dataset-dir', str(tiny_shapes)]) == 0
    out = capsys.readouterr().out
    assert out.count(': ok (') == 2 and 'synthetic_shapes_train.json' in out


def _set_box(i, box):
    def fn(coco):
        coco['annotations'][i]['bbox'] = box
    return fn


@pytest.mark.parametrize('fn, key, example', [
    (_set_box(0, [1, 1, 0, 5]), 'degenerate_box', 'annotation 1'),
    (_set_box(0, [1, 1, 5, -3]), 'degenerate_box', 'annotation 1'),
    (_set_box(0, [float('nan'), 1, 5, 5]), 'non_finite_box', 'annotation 1'),
    (_set_box(0, [1, 1, 5]), 'non_finite_box', 'annotation 1'),
    (_set_box(0, [900, 900, 10, 10]), 'box_outside_image', 'annotation 1'),
    (lambda c: c['annotations'][0].update(category_id=999), 'unknown_category_id',
     'annotation 1'),
    (lambda c: c['annotations'][0].update(image_id=12345), 'unknown_image_id', 'annotation 1'),
    (lambda c: c['annotations'][0].update(area=0), 'bad_area', 'annotation 1'),
    (lambda c: c['images'][0].update(width=0), 'bad_image_entry', 'image'),
    (lambda c: c['images'].append(dict(c['images'][0])), 'duplicate_image_id', 'image id'),
])
def test_each_problem_is_found_with_an_example(data, fn, key, example):
    ann = edit(data, fn)
    rep = check_split(ann, data / 'val')
    assert key in rep.problems and not rep.ok
    assert str(rep.problems[key][0]).startswith(example)


def test_zero_byte_and_missing_images_are_named(data, capsys):
    coco = json.loads(val_json(data).read_text())
    names = [im['file_name'] for im in coco['images'][:2]]
    (data / 'val' / names[0]).write_bytes(b'')
    (data / 'val' / names[1]).unlink()
    rc = main(['check-data', '--ann', str(val_json(data)), '--images', str(data / 'val')])
    captured = capsys.readouterr()
    assert rc == 2
    assert f'1 image files of zero bytes (e.g. {names[0]})' in captured.out
    assert f'1 image files that do not exist (e.g. {names[1]})' in captured.out
    err = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(err) == 1 and names[0] in err[0] and '--repair OUT' in err[0]


def test_no_annotations_is_refused_not_a_numpy_error(data, capsys):
    edit(data, lambda c: c.update(annotations=[]))
    rc = main(['check-data', '--ann', str(val_json(data))])
    assert rc == 2
    assert 'synthetic_shapes_val.json has no annotations' in capsys.readouterr().err
    with pytest.raises(UserError, match='has no annotations'):
        from pgd.data.check import repair
        repair(check_split(val_json(data)), data / 'clean.json')


def test_corrupt_and_missing_annotation_files(tmp_path):
    bad = tmp_path / 'x.json'
    bad.write_text('{"images": [')
    with pytest.raises(UserError, match=r'^corrupt annotation file .*x\.json: not COCO JSON'):
        check_split(bad)
    bad.write_text('{"images": []}')
    with pytest.raises(UserError, match='missing or not a list: annotations, categories'):
        check_split(bad)
    with pytest.raises(UserError, match='annotation file not found'):
        check_split(tmp_path / 'nope.json')


def test_repair_writes_a_clean_file_and_a_report(data, capsys):
    coco = json.loads(val_json(data).read_text())
    empty_image = coco['images'][1]
    (data / 'val' / empty_image['file_name']).write_bytes(b'')
    n_img_anns = sum(a['image_id'] == empty_image['id'] for a in coco['annotations'])
    bad_ann = next(a for a in coco['annotations'] if a['image_id'] != empty_image['id'])
    edit(data, lambda c: next(a for a in c['annotations'] if a['id'] == bad_ann['id'])
         .update(bbox=[0, 0, 0.5, 3]))
    out = data / 'annotations' / 'clean_val.json'
    rc = main(['check-data', '--ann', str(val_json(data)), '--images', str(data / 'val'),
               '--repair', str(out)])
    assert rc == 0
    clean = json.loads(out.read_text())
    report = json.loads(report_path(out).read_text())
    assert report_path(out).name == 'clean_val.report.json'
    assert len(clean['annotations']) == len(coco['annotations']) - n_img_anns - 1
    assert len(clean['images']) == len(coco['images']) - 1
    assert report['removed']['images'] == [empty_image['id']]
    assert bad_ann['id'] in report['removed']['annotations']
    assert report['problems']['degenerate_box']['count'] == 1
    assert check_split(out, data / 'val').ok  # the repaired file passes


def test_dag_check_of_an_external_dataset(data, tmp_path):
    """``python -m pgd check-external-data`` (rule check_data) runs the same check."""
    from pgd.workflow import check_data
    required = ['annotations/synthetic_shapes_val.json', 'val']
    stamp = tmp_path / 'ok.json'
    check_data(data, required, stamp)
    assert stamp.is_file()
    edit(data, _set_box(0, [1, 1, 0, 0]))
    stamp.unlink()
    with pytest.raises(SystemExit, match='boxes with width or height below 1 px'):
        check_data(data, required, stamp)
    assert not stamp.exists()


def test_the_data_rules_call_check_data():
    from pgd.paths import REPO_ROOT
    text = (REPO_ROOT / 'workflow' / 'rules' / 'data.smk').read_text()
    assert text.count('-m pgd check-data --dataset-dir {params.out}') == 2  # make / holdout
