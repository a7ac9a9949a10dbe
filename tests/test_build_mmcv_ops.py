"""benchmarks/build_mmcv_ops.py: the source list of mmcv's CUDA build, with unique object names
(compiling needs a CUDA toolkit and is not done here)."""
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark


def load_script():
    return load_benchmark('build_mmcv_ops')


def _touch(root, rel, text=''):
    path = root / 'mmcv' / 'ops' / 'csrc' / 'pytorch' / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_op_sources_are_unique_and_rerunnable(tmp_path):
    for rel in ('nms.cpp', 'pybind.cpp', 'cpu/nms.cpp', 'cuda/nms_cuda.cu', 'cuda/cudabind.cpp',
                'cuda/readme.txt'):
        _touch(tmp_path, rel, rel)
    script = load_script()
    first = script.op_sources(str(tmp_path))
    names = [Path(p).relative_to(tmp_path / 'mmcv/ops/csrc/pytorch').as_posix() for p in first]
    assert names == ['nms.cpp', 'pybind.cpp', 'cpu/cpu_nms.cpp', 'cuda/cuda_nms_cuda.cu',
                     'cuda/cuda_cudabind.cpp']
    assert Path(first[2]).read_text() == 'cpu/nms.cpp'      # a copy, the original kept
    assert script.op_sources(str(tmp_path)) == first         # no copies of copies


def test_op_sources_refuses_a_folder_that_is_not_mmcv(tmp_path):
    with pytest.raises(FileNotFoundError, match='not an mmcv source tree'):
        load_script().op_sources(str(tmp_path))
