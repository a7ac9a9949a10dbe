"""Resolving, checking and retargeting MMDetection configs before a Runner is built."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pgd.errors import UserError
from pgd.paths import REPO_ROOT

CONFIG_ROOT = REPO_ROOT / 'config' / 'detectors'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
#: pipeline steps that set the input size
RESIZE_STEPS = ('Resize', 'RandomResize', 'RandomChoiceResize', 'FixShapeResize',
                'FixScaleResize')
EVALUATORS = {'val_dataloader': 'val_evaluator', 'test_dataloader': 'test_evaluator'}
# Full JSON validation is cheap for the synthetic/mini files; real COCO train json is ~450 MB,
# so above this size only the opening bytes are checked.
_FULL_CHECK_BYTES = 64 << 20


def known_config_names(root: Path = CONFIG_ROOT) -> list:
    return sorted(str(p.relative_to(root).with_suffix(''))
                  for p in root.glob('*/*.py') if not p.parent.name.startswith('_'))


#: a config *name*: folder/file stems under the config root, no ``..``, not absolute.
CONFIG_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$')


def resolve_config(name_or_path: str, root: Path | None = None) -> Path:
    """The config file of ``name_or_path``.

    * an existing file whose name ends in ``.py`` is used as given: the user passed a path
      on purpose (e.g. ``config/detectors/mini/atss_r18_student.py`` or ``../my_cfg.py``);
    * anything else is a *name* such as ``mini/atss_r18_student`` and resolves only inside
      ``root`` (config/detectors by default). A name with ``..``, an absolute path or a
      name that would leave ``root`` is refused, so a typo or a crafted name can never
      execute a Python file outside the config folders."""
    root = Path(root) if root is not None else CONFIG_ROOT
    text = str(name_or_path)
    path = Path(text)
    if text.endswith('.py'):
        if path.is_file():
            return path
        raise UserError(f'config file not found: {text} (a path must be an existing .py file; '
                        f'a name such as mini/atss_r18_student has no .py)')
    if not CONFIG_NAME_RE.match(text) or '..' in text.split('/'):
        raise UserError(f"bad detector/config name '{text}': a name such as "
                        f"mini/atss_r18_student resolves only under config/detectors/ (no "
                        f"'..', not absolute); to use another file pass an existing path "
                        f"ending in .py")
    candidate = root / f'{text}.py'
    if candidate.is_file() and candidate.resolve().is_relative_to(root.resolve()):
        return candidate
    names = known_config_names(root)
    detectors = sorted({n.split('/')[-1].split('_')[0] for n in names})
    raise UserError(f"unknown detector/config '{text}': not a .py file and not one of "
                    f"config/detectors/<scale>/<name> (detectors: {', '.join(detectors)}; "
                    f"e.g. {names[0] if names else 'mini/atss_r18_student'})")


def load_config(name_or_path: str, cfg_options: dict | None = None, resolve: bool = True):
    """``(path, Config)`` of a config name or path with ``cfg_options`` merged. With
    ``resolve`` the mini configs' ``results/{scale}/pretrain/...`` backbone checkpoint is filled
    from ``pretrain_scale`` (default ``none``: the init is dropped, from scratch), so every
    command builds a model whose init names a real file
    (:func:`pgd.pretrain.check.resolve_pretrained`)."""
    from mmengine.config import Config
    path = resolve_config(name_or_path)
    cfg = Config.fromfile(str(path))
    drawn_for = cfg.get('image_size')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
        if 'image_size' in cfg_options and drawn_for is not None:
            apply_image_size(cfg, int(drawn_for))
    if resolve:
        from pgd.pretrain.check import resolve_pretrained
        resolve_pretrained(cfg)
    return path, cfg


def _loader_pipelines(cfg):
    """``(where, pipeline)`` of every dataloader's dataset (an empty list where none)."""
    for key in LOADERS:
        yield (f'{key}.dataset.pipeline',
               ((cfg.get(key) or {}).get('dataset') or {}).get('pipeline') or [])


def apply_image_size(cfg, parsed: int) -> None:
    """``--cfg-options image_size=N`` on a SYNTHETIC config: its fixed ``Resize`` steps follow.

    MMEngine substitutes a config's variables when the file is parsed, so overriding the
    variable alone would leave every pipeline resizing to the parsed ``parsed`` px (and
    :func:`check_synthetic_image_size` would refuse N-px data). Here every loader's
    ``Resize(scale=(parsed, parsed))`` becomes ``(N, N)``: the mini detectors then run on data
    drawn at N px (``make-data --image-size N``; the workflow passes the dataset's
    ``image_size``). Other resize steps derived from the size (multi-scale training) cannot be
    rescaled safely and stop with one line.
    """
    from pgd.data.make_data import MIN_IMAGE_SIZE   # lazy: the generator imports cv2
    size = cfg.get('image_size')
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE:
        raise UserError(f'image_size must be an integer >= {MIN_IMAGE_SIZE} (px), got {size!r}')
    if not cfg.get('dataset_is_synthetic', False) or size == parsed:
        return
    # the loaders' pipelines, and the config-level lists they were built from (unused once
    # parsed, but a dumped config should not say 128 px where the loaders say N)
    pipelines = dict(_loader_pipelines(cfg))
    pipelines.update({key: cfg.get(key) or [] for key in ('train_pipeline', 'test_pipeline')})
    for where, pipeline in pipelines.items():
        for i, step in enumerate(pipeline):
            kind, scale = step.get('type'), step.get('scale')
            fixed = kind == 'Resize' and isinstance(scale, (list, tuple))
            if fixed and tuple(scale) == (parsed, parsed):
                step['scale'] = (size, size)
            elif kind in RESIZE_STEPS and not (fixed and tuple(scale) == (size, size)):
                raise UserError(f'image_size={size}: {where}.{i} ({kind}, scale {scale}) '
                                f'cannot follow it; only Resize(scale=({parsed}, {parsed})) '
                                f'steps are rescaled')


def retarget_data_root(cfg, data_root: str) -> None:
    """Point every dataloader and COCO evaluator at ``data_root`` (ann files stay relative)."""
    root = str(data_root).rstrip('/') + '/'
    for key in LOADERS:
        if key not in cfg:
            continue
        ds = cfg[key]['dataset']
        ds['data_root'] = root
        ev_key = EVALUATORS.get(key)
        if ev_key and ev_key in cfg and 'ann_file' in cfg[ev_key]:
            cfg[ev_key]['ann_file'] = os.path.join(root, ds['ann_file'])
    check_synthetic_image_size(cfg, Path(root))


def check_synthetic_image_size(cfg, data_root: Path) -> None:
    """A SYNTHETIC dataset must be used at the size it was drawn at: the configs resize to
    ``image_size``, and resizing 160 px scenes to 256 px would silently change the object
    scales the mini calibration was done at (and cost 2.5x the compute)."""
    meta_path = data_root / 'meta.json'
    if not cfg.get('dataset_is_synthetic', False) or not meta_path.is_file():
        return
    try:
        drawn = int(json.loads(meta_path.read_text())['image_size'])
    except (ValueError, KeyError, TypeError):
        return  # not written by make-data; nothing to compare
    expected = cfg.get('image_size')
    if expected is not None and int(expected) != drawn:
        raise UserError(f'{data_root} holds {drawn}-px SYNTHETIC images but the config '
                        f'resizes to image_size={expected}; regenerate the data with '
                        f'--image-size {expected}, or pass --cfg-options image_size={drawn}')
    # a Resize of another size (set directly, or a step apply_image_size could not rescale)
    # would silently rescale the scenes
    for where, pipeline in _loader_pipelines(cfg):
        for i, step in enumerate(pipeline):
            scale = step.get('scale') if step.get('type') == 'Resize' else None
            if scale is not None and tuple(scale) != (drawn, drawn):
                raise UserError(f'{where}.{i}: Resize scale {tuple(scale)} '
                                f'but {data_root} holds {drawn}-px SYNTHETIC images; set it '
                                f'to ({drawn}, {drawn}) too')


def annotation_path(cfg, loader_key: str) -> Path:
    ds = cfg[loader_key]['dataset']
    return Path(ds.get('data_root') or '') / ds['ann_file']


def check_annotation_file(path: Path) -> None:
    """One-line errors for a missing or corrupt COCO annotation file."""
    if not path.is_file():
        raise UserError(f'annotation file not found: {path} (create the dataset first, e.g. '
                        '`python -m pgd make-data`, or pass --data-root)')
    size = path.stat().st_size
    try:
        if size <= _FULL_CHECK_BYTES:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            missing = [k for k in ('images', 'annotations', 'categories') if k not in data]
            if missing:
                raise ValueError(f'missing key(s) {missing}')
        else:
            with open(path, 'rb') as f:
                if f.read(64).lstrip()[:1] != b'{':
                    raise ValueError('does not start with a JSON object')
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f'corrupt annotation file {path}: not COCO JSON ({exc})') from None


def check_split_data(cfg, loader_key: str) -> None:
    """Refuse a split of ``cfg`` with bad data (``pgd.data.check``): the same check for
    train, val and test, before any model is built, so nothing is dropped silently in
    training and still counted by the evaluation."""
    from pgd.data.check import require_clean
    ds = cfg[loader_key]['dataset']
    root = Path(ds.get('data_root') or '')
    images = root / ((ds.get('data_prefix') or {}).get('img') or '')
    classes = (ds.get('metainfo') or {}).get('classes')
    require_clean(root / ds['ann_file'], images, classes)


def check_writable(directory) -> Path:
    """Create ``directory`` if needed and prove a file can be written there (create and
    remove a temporary file), so a read-only, full or impossible output location stops the
    command before hours of training or evaluation, not after."""
    import tempfile
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix='.pgd-write-test-') as fh:
            fh.write(b'x')
            fh.flush()
    except OSError as exc:
        raise UserError(f'cannot write to output folder {path}: '
                        f'{exc.strerror or exc}') from None
    return path


def dataset_info(cfg) -> dict:
    """Name of the dataset a config uses and whether it is SYNTHETIC (stamped in results)."""
    from pgd.provenance import portable_path
    val = cfg['val_dataloader']['dataset'] if 'val_dataloader' in cfg else None
    return {'name': cfg.get('dataset_name', 'unknown'),
            'synthetic': bool(cfg.get('dataset_is_synthetic', False)),
            # repo-relative, or relative to the data root: never a machine's absolute path
            'val_ann_file': portable_path(annotation_path(cfg, 'val_dataloader'),
                                          val.get('data_root') or '.') if val else None}


def select_device(requested: str) -> str:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is a user error."""
    import torch
    if requested == 'cuda' and not torch.cuda.is_available():
        raise UserError('CUDA requested (--device cuda) but no CUDA device is available '
                        '(torch.cuda.is_available() is False); use --device cpu or auto')
    if requested == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    return requested
