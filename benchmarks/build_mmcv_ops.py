"""Build mmcv 2.1.0's compiled ops (``mmcv._ext``) from its source release for the torch and
CUDA already installed, where no prebuilt mmcv wheel matches them.

Why this exists: the GPU figures of ``benchmarks/README.md`` were taken on a machine with
torch 2.11 + CUDA 13.0, for which mmcv 2.1.0 publishes no wheel, and its ``setup.py`` imports
``pkg_resources`` (gone from recent setuptools). This script compiles the same sources as that
``setup.py`` does for a CUDA build (``mmcv/ops/csrc/pytorch/{*.cpp, cpu/*.cpp, cuda/*.cu,
cuda/*.cpp}`` with ``MMCV_WITH_CUDA``) through ``torch.utils.cpp_extension.load`` (ninja,
``MAX_JOBS`` parallel jobs, the architectures of ``TORCH_CUDA_ARCH_LIST``) and puts the result
at ``<src>/mmcv/_ext.so``; put ``<src>`` first on ``PYTHONPATH`` (or ``--no-deps``-install the
tree). Measured: 136 sources, sm_90 only, 287 s on 16 cores, 23.7 MiB.

    tar xzf mmcv-2.1.0.tar.gz -C /tmp
    MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 python benchmarks/build_mmcv_ops.py /tmp/mmcv-2.1.0
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import time
from typing import List


def op_sources(src_root: str) -> List[str]:
    """The C++/CUDA sources of mmcv's CUDA build, each with a unique file stem.

    ninja names an object after its source's stem, so ``pytorch/nms.cpp`` and
    ``pytorch/cpu/nms.cpp`` would clash: every source in a sub-folder is used through a copy
    named ``<folder>_<name>`` beside it (same folder, so its relative includes still resolve).
    """
    csrc = os.path.join(src_root, 'mmcv', 'ops', 'csrc', 'pytorch')
    if not os.path.isdir(csrc):
        raise FileNotFoundError(f'{src_root} is not an mmcv source tree (no {csrc})')
    sources = sorted(glob.glob(os.path.join(csrc, '*.cpp')))
    for sub, pattern in (('cpu', '*.cpp'), ('cuda', '*.cu'), ('cuda', '*.cpp')):
        for path in sorted(glob.glob(os.path.join(csrc, sub, pattern))):
            name = os.path.basename(path)
            if name.startswith(f'{sub}_'):          # a copy made by an earlier run
                continue
            copy = os.path.join(csrc, sub, f'{sub}_{name}')
            shutil.copyfile(path, copy)
            sources.append(copy)
    stems = [os.path.splitext(os.path.basename(p))[0] for p in sources]
    assert len(set(stems)) == len(stems), 'duplicate object names'
    return sources


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('src_root', help='unpacked mmcv 2.1.0 source release')
    ap.add_argument('--build-dir', default=None, help='default: <src_root>/build_ops')
    args = ap.parse_args(argv)
    from torch.utils.cpp_extension import load
    sources = op_sources(args.src_root)
    csrc = os.path.join(args.src_root, 'mmcv', 'ops', 'csrc')
    build_dir = args.build_dir or os.path.join(args.src_root, 'build_ops')
    os.makedirs(build_dir, exist_ok=True)
    print(f'building {len(sources)} sources with MAX_JOBS={os.environ.get("MAX_JOBS", "all")}, '
          f'TORCH_CUDA_ARCH_LIST={os.environ.get("TORCH_CUDA_ARCH_LIST", "visible GPUs")}',
          flush=True)
    t0 = time.time()
    flags = ['-DMMCV_WITH_CUDA', '-std=c++17', '-O2']
    module = load(name='_ext', sources=sources,
                  extra_include_paths=[os.path.join(csrc, d)
                                       for d in ('pytorch', 'common', 'common/cuda')],
                  extra_cflags=flags, extra_cuda_cflags=flags, build_directory=build_dir,
                  with_cuda=True)
    target = os.path.join(args.src_root, 'mmcv', '_ext.so')
    shutil.copyfile(module.__file__, target + '.tmp')
    os.replace(target + '.tmp', target)
    print(f'built {target} in {time.time() - t0:.0f} s '
          f'({os.path.getsize(target) / 2 ** 20:.1f} MiB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
