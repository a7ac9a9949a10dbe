"""The GPU benchmark (benchmarks/gpu_check.py) runs on the CPU with --tiny, so it cannot rot
before a GPU is available; a failing part makes it exit non-zero."""
import re

import pytest

from benchmark_scripts import load_benchmark


def load_script():
    return load_benchmark('gpu_check')


@pytest.mark.slow
def test_gpu_check_tiny_cpu_run(capsys):
    rc = load_script().main(['--device', 'cpu', '--tiny', '--methods', 'pgd,frs'])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert 'ATSS R101 -> R50' in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith('    ')}
    assert list(rows) == ['student', 'teacher', 'pgd', 'frs']
    for method in ('pgd', 'frs'):      # ms, ratio, images/s, peak, ATen ops (+extra)
        ms, _, ratio, ips, _, peak, ops, extra = rows[method]
        assert 0.5 < float(ratio) < 5.0 and float(ips) > 0 and peak == 'n/a'
        assert int(extra.strip('()')) == int(ops) - int(rows['student'][6]) - int(
            rows['teacher'][6])
        assert int(extra.strip('()')) > 0
    pgw_line = next(line for line in out.splitlines() if 'PGW masks vs per-GT loop' in line)
    assert pgw_line.split()[-4:] == ['all_then_mask', '==,', 'inside', '=='], pgw_line


def test_gpu_check_fails_when_pgw_masks_differ_from_the_cpu_loop(monkeypatch, capsys):
    import pgd.distill.pgw as pgw
    script = load_script()
    real = pgw.pgw_masks

    def off_by_one_ulp(*args, **kwargs):
        import torch
        return [torch.nextafter(m, m + 1) for m in real(*args, **kwargs)]

    monkeypatch.setattr(script, 'check_step', lambda args, report: None)
    monkeypatch.setattr(pgw, 'pgw_masks', off_by_one_ulp)
    rc = script.main(['--device', 'cpu', '--tiny'])
    captured = capsys.readouterr()
    assert rc == 1 and 'FAILED: pgw' in captured.err
    assert 'differ from the CPU reference' in captured.err
    # every zero moved off zero: the verdict counts those as selection differences
    assert re.search(r"'inside': '!= \([1-9][0-9]* selections differ", captured.err)


def test_gpu_check_fails_loudly(monkeypatch, capsys):
    script = load_script()

    def broken(args, report):
        raise RuntimeError('simulated failure')

    monkeypatch.setattr(script, 'check_step', broken)
    monkeypatch.setattr(script, 'check_pgw', broken)
    rc = script.main(['--device', 'cpu', '--tiny'])
    captured = capsys.readouterr()
    assert rc == 1
    assert 'FAILED: step, pgw' in captured.err
    assert 'step check' in captured.out and 'FAILED' in captured.out


def test_gpu_check_without_cuda_says_so(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    rc = load_script().main(['--device', 'cuda'])
    assert rc == 2
    assert 'CUDA is not available' in capsys.readouterr().err


def test_device_busy_profiler_path_runs_without_cuda():
    """The CUDA-only profiler summary keeps working code (attributes of the profiler's events):
    forced onto the CPU it finds no kernels and no launches, and a positive wall time."""
    import torch
    kernel_ms, wall_ms, launches = load_script().device_busy(
        lambda: torch.ones(1000).sum(), 'cuda', lambda: None)
    assert kernel_ms == 0 and launches == 0 and wall_ms > 0
    assert load_script().device_busy(lambda: None, 'cpu', lambda: None) is None


def test_gpu_check_refuses_an_unknown_method_before_any_work(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script().main(['--device', 'cpu', '--tiny', '--methods', 'pgd,pgdd'])
    assert exit_info.value.code == 2
    assert 'unknown --methods pgdd (feature methods: defeat,frs,fgfi,fkd,fgd,pgd)' in \
        capsys.readouterr().err
