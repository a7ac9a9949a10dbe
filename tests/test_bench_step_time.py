"""bench_step_time: the bootstrap interval its verdict rests on, and a tiny end-to-end run."""
import re
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark


@pytest.fixture(scope='module')
def bench():
    return load_benchmark('bench_step_time')


def _timings(method, student, teacher):
    return {'pgd': method, 'student': student, 'teacher': teacher}


def test_interval_brackets_the_ratio_of_medians_and_is_reproducible(bench):
    import numpy as np
    rng = np.random.default_rng(1)
    s = list(0.50 * (1 + 0.05 * rng.standard_normal(21)))
    t = list(0.35 * (1 + 0.05 * rng.standard_normal(21)))
    p = list(0.88 * (1 + 0.05 * rng.standard_normal(21)))
    d = _timings(p, s, t)
    (ratio, _), _ = bench.step_ratios(d, d)
    lo, hi = bench.ratio_interval(d)
    assert lo < ratio < hi
    assert (lo, hi) == bench.ratio_interval(d)             # fixed seed: same interval
    assert 0.9 < lo and hi < 1.2


def test_interval_narrows_with_more_rounds_and_collapses_without_spread(bench):
    import numpy as np
    rng = np.random.default_rng(2)

    def width(rounds):
        noisy = lambda mean: list(mean * (1 + 0.05 * rng.standard_normal(rounds)))  # noqa
        lo, hi = bench.ratio_interval(_timings(noisy(0.88), noisy(0.5), noisy(0.35)))
        return hi - lo
    assert width(81) < width(9)
    lo, hi = bench.ratio_interval(_timings([0.9] * 5, [0.5] * 5, [0.4] * 5))
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


def test_rounds_are_resampled_as_wholes(bench):
    # every round is slow or fast for all three functions alike (load drifting between
    # rounds): the ratio is 1.02 in every round, so a paired resampling gives exactly 1.02;
    # resampling functions independently would mix slow and fast rounds
    scale = [1.0, 1.3, 0.8, 1.1, 0.9, 1.25, 0.85]
    d = _timings([1.02 * 0.85 * c for c in scale], [0.5 * c for c in scale],
                 [0.35 * c for c in scale])
    lo, hi = bench.ratio_interval(d)
    assert lo == pytest.approx(1.02) and hi == pytest.approx(1.02)


def test_verdict_needs_the_whole_interval_on_one_side(bench):
    assert bench.verdict((1.01, 1.049)) == 'MEETS'
    assert bench.verdict((1.051, 1.09)) == 'MISSES'
    assert bench.verdict((1.03, 1.06)) == 'UNDECIDED'
    with pytest.raises(ValueError, match='2 rounds'):
        bench.ratio_interval(_timings([1.0], [0.5], [0.4]))


def test_tiny_run_prints_ratios_intervals_and_a_verdict(bench, monkeypatch, capsys, tmp_path):
    out_json = tmp_path / 'rounds.json'
    monkeypatch.setattr('sys.argv', ['bench_step_time.py', '--detectors', 'fcos', '--methods',
                                     'pgd', '--repeats', '3', '--batch', '1', '--size', '64',
                                     '--threads', '1', '--json', str(out_json)])
    bench.main()
    out = capsys.readouterr().out
    row = re.search(r'fcos\s+pgd\s+wall (\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\].*'
                    r'(MEETS|MISSES|UNDECIDED)', out)
    assert row, out
    ratio, lo, hi = map(float, row.groups()[:3])
    assert lo <= ratio <= hi
    assert re.search(r'ATen ops per step: student \d+, teacher \d+, pgd \d+ \([+-]\d+\)', out)
    assert 'PGW' in out and 'PGD loss fwd+bwd' in out
    # the JSON holds every round, from which the printed ratio and interval are recomputed
    import json
    saved = json.loads(out_json.read_text())['detectors']['fcos']
    assert all(len(saved['wall_s'][name]) == 3 for name in ('student', 'teacher', 'pgd', 'pgw'))
    assert saved['ratios']['pgd']['wall'] == pytest.approx(ratio, abs=5e-4)
    assert bench.ratio_interval(saved['wall_s']) == pytest.approx(
        tuple(saved['ratios']['pgd']['wall_ci']))
    assert saved['ops']['pgd'] > saved['ops']['student'] + saved['ops']['teacher']


def test_unknown_method_is_refused_in_one_line(bench, monkeypatch, capsys):
    monkeypatch.setattr('sys.argv', ['bench_step_time.py', '--methods', 'pgd,nosuch'])
    with pytest.raises(SystemExit) as exc:
        bench.main()
    assert exc.value.code == 2
    assert 'unknown --methods nosuch' in capsys.readouterr().err


def _run_json(path, scale, commit='abc', repeats=4):
    import json
    rounds = [scale * c for c in (1.0, 1.1, 0.9, 1.05)][:repeats]
    path.write_text(json.dumps(dict(
        benchmark='bench_step_time', git_commit=commit, torch='2.x', threads=1,
        args=dict(methods='pgd', detectors='atss', repeats=repeats, json=str(path), batch=8),
        detectors=dict(atss=dict(wall_s=dict(student=[0.5 * r for r in rounds],
                                             teacher=[0.4 * r for r in rounds],
                                             pgd=[0.927 * r for r in rounds]))))))
    return str(path)


def test_pooled_runs_keep_every_round_and_refuse_mixed_set_ups(tmp_path, capsys):
    pool = load_benchmark('pool_step_runs')
    a = _run_json(tmp_path / 'a.json', 1.0)
    b = _run_json(tmp_path / 'b.json', 1.2)
    pool.main([a, b])
    out = capsys.readouterr().out
    # 8 rounds, each with ratio 0.927 / 0.9 = 1.030, whatever the load of its run
    assert re.search(r'atss\s+pgd\s+8 rounds\s+1\.030 \[1\.030, 1\.030\]\s+MEETS', out), out
    c = _run_json(tmp_path / 'c.json', 1.0, commit='def')
    with pytest.raises(SystemExit, match='differ in commit'):
        pool.main([a, c])
    pool.main([a, c, '--mixed-commits'])                 # the user vouches for the code
    assert 'commits abc, def' in capsys.readouterr().out
    d = tmp_path / 'd.json'
    d.write_text(Path(c).read_text().replace('"batch": 8', '"batch": 4'))
    with pytest.raises(SystemExit, match='differ in torch, threads or arguments'):
        pool.main([a, str(d), '--mixed-commits'])
