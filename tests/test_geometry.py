"""`pgd geometry`: locations covered per GT box, with the detector's own priors."""
import json

import numpy as np
import pytest

from pgd.analysis.geometry import coverage, covered_locations, summarise
from pgd.cli import main


def test_covered_locations_strict_inside():
    xs = np.array([0., 8., 16., 24., 32.])
    axes = [(xs, xs), (np.array([0., 16., 32.]), np.array([0., 16., 32.]))]
    boxes = np.array([[4., 4., 20., 12.],      # x in {8, 16}, y in {8}: 2 on P3, 0 on P4
                      [0., 0., 16., 16.],      # edges on centres are outside: 1 + 0
                      [-10., -10., 50., 50.]])  # everything: 25 + 9
    assert covered_locations(boxes, axes).tolist() == [2, 1, 34]


def _coco(tmp_path, boxes, size=(128, 128)):
    ann = {'images': [{'id': 1, 'file_name': 'a.jpg', 'width': size[0], 'height': size[1]}],
           'annotations': [{'id': i + 1, 'image_id': 1, 'category_id': 1, 'bbox': b,
                            'area': b[2] * b[3], 'iscrowd': 0} for i, b in enumerate(boxes)],
           'categories': [{'id': 1, 'name': 'circle'}]}
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(ann))
    return path


@pytest.mark.parametrize('config,offset', [('mini/atss_r18_student', 0.0),
                                           ('mini/fcos_r18_student', 0.5)])
def test_coverage_uses_the_detectors_priors(tmp_path, config, offset):
    """ATSS's anchor centres sit at j * s, FCOS's points at (j + 0.5) * s; brute force over
    the five levels (strides 8..128) of a 128-px input."""
    boxes = [[10, 20, 50, 30], [0, 0, 128, 128]]
    counts = coverage(config, str(_coco(tmp_path, boxes)))
    expected = []
    for x, y, w, h in boxes:
        n = 0
        for s in (8, 16, 32, 64, 128):
            c = (np.arange(int(np.ceil(128 / s))) + offset) * s
            n += int(((c > x) & (c < x + w)).sum() * ((c > y) & (c < y + h)).sum())
        expected.append(n)
    assert counts.tolist() == expected
    assert expected[0] > 0


def test_resize_scales_boxes(tmp_path):
    """A 256-px image is resized to the mini 128-px input: the same relative box covers the
    same locations as on a 128-px image."""
    small = coverage('mini/atss_r18_student', str(_coco(tmp_path, [[10, 20, 50, 30]])))
    big_dir = tmp_path / 'big'
    big_dir.mkdir()
    big = coverage('mini/atss_r18_student',
                   str(_coco(big_dir, [[20, 40, 100, 60]], size=(256, 256))))
    assert big.tolist() == small.tolist()


def test_summary_fractions():
    s = summarise(np.array([1, 10, 30, 60, 120, 200]), k=30)
    assert s['num_gts'] == 6 and s['median'] == 45.0
    assert s['frac_below_k'] == pytest.approx(2 / 6)
    assert s['frac_at_least_2k'] == pytest.approx(3 / 6)
    assert s['frac_at_least_4k'] == pytest.approx(2 / 6)


def test_cli_prints_and_writes_json(tmp_path, capsys):
    ann = _coco(tmp_path, [[10, 20, 50, 30], [30, 30, 60, 60]])
    out = tmp_path / 'geom.json'
    assert main(['geometry', 'mini/atss_r18_student', '--ann', str(ann), '--json', str(out),
                 '--k', '9']) == 0
    assert 'below K = 9' in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data['num_gts'] == 2 and data['k'] == 9 and data['ann_file'] == 'ann.json'


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(['geometry', 'mini/atss_r18_student', '--ann', str(tmp_path / 'no.json')]) == 2
    assert 'annotation file not found' in capsys.readouterr().err
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps({'images': [], 'annotations': [], 'categories': []}))
    assert main(['geometry', 'mini/atss_r18_student', '--ann', str(empty)]) == 2
    assert 'no non-crowd annotations' in capsys.readouterr().err
    ann = _coco(tmp_path, [[10, 20, 50, 30]])
    assert main(['geometry', 'mini/atss_r18_student', '--ann', str(ann), '--k', '0']) == 2
    assert '--k must be a positive integer' in capsys.readouterr().err
