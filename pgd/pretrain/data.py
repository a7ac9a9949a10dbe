"""Synthetic pretraining images: crops around the objects of SYNTHETIC ``shapes`` scenes, each
labelled with its shape class (10-way classification, the CIFAR/ImageNet analogue).

**Why this task.** The detectors must tell 10 shapes apart by their geometry (colours and
textures are random and shared with clutter). A crop centred on one object, with the scene's
own background, clutter and occluders around it, gives that signal directly: one label per
sample, like ImageNet. The other candidate, multi-label presence of the classes on whole 128-px
scenes (BCE, global pooling), was tried first and hardly learned in the time budget: on mini
R18, 4000 scenes, batch 32, after 4 epochs (500 iterations) its val mAP was 40 against a chance
level of 31 and its loss had barely left the prior's. Crops are also 4x cheaper per sample at
64 px than whole scenes at 128 px. Objects come in the detection data's sizes (13-109 px at the
mini settings) and are resized to ``crop_size``, so the backbone sees every shape at one
scale; the detector's fine-tuning (all layers and BatchNorm trained) adapts it to the others.

**Never detection images.** Every scene is a pure function of its RNG. Detection datasets
(``make-data``) draw image ``i`` of split ``train``/``val`` from the seed sequence
``[seed, kind, 1|2, i]`` (:func:`pgd.data.synthetic.image_rng`); pretraining scenes use the
split ids 3 (``pretrain``, the pretraining train set) and 4 (``pretrain_val``, its held-out
val set), so for any seed they come from different RNG streams and can never coincide with a
detection train or val image, nor with each other. The generator's public ``generate_image``
accepts only ``train``/``val``, so the scene is rendered here from that dedicated RNG with the
generator's own ``shapes`` renderer (same drawing code, same difficulty knobs).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet.registry import DATASETS, TRANSFORMS
from mmengine.dataset import BaseDataset

from pgd.data import synthetic as syn

KIND = 'shapes'
NUM_CLASSES = len(syn.SHAPES_CLASSES)
CONTEXT = 1.4  # crop side / longer box side: the object plus a margin of its surroundings
# Split ids of the pretraining scenes; disjoint from the detection splits (checked below).
PRETRAIN_SPLIT_IDS = {'pretrain': 3, 'pretrain_val': 4}
if set(PRETRAIN_SPLIT_IDS.values()) & set(syn._SPLIT_IDS.values()):  # pragma: no cover
    raise ImportError('pretraining split ids collide with the detection splits of '
                      'pgd.data.synthetic; pick unused ids in PRETRAIN_SPLIT_IDS')


def pretrain_rng(seed: int, part: str, index: int) -> np.random.Generator:
    """The RNG of one pretraining scene, built like :func:`pgd.data.synthetic.image_rng` but
    with a pretraining split id (3 or 4) that no detection image uses."""
    if part not in PRETRAIN_SPLIT_IDS:
        raise ValueError(f'part must be one of {tuple(PRETRAIN_SPLIT_IDS)}, got {part!r}')
    if int(seed) < 0 or int(index) < 0:
        raise ValueError('seed and index must be non-negative integers')
    return np.random.default_rng(
        [int(seed), syn._KIND_IDS[KIND], PRETRAIN_SPLIT_IDS[part], int(index)])


def pretrain_scene(seed: int, part: str, index: int, image_size: int = 128,
                   difficulty: Optional[syn.ShapesDifficulty] = None):
    """One SYNTHETIC pretraining scene ``(image, objects)``, in ``generate_image``'s format."""
    if difficulty is None:
        difficulty = syn.make_difficulty(KIND)
    if int(image_size) < 64:
        raise ValueError(f'image_size must be >= 64, got {image_size}')
    return syn._render_shapes(pretrain_rng(seed, part, index), int(image_size), difficulty)


def object_crop(img: np.ndarray, bbox, crop_size: int) -> np.ndarray:
    """The square ``CONTEXT`` x (longer box side) window centred on ``bbox`` ([x, y, w, h]),
    edge-replicated where it leaves the image, resized to ``crop_size``."""
    x, y, w, h = bbox
    side = max(2, int(round(CONTEXT * max(w, h))))
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    padded = cv2.copyMakeBorder(img, side, side, side, side, cv2.BORDER_REPLICATE)
    window = padded[y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side]
    interp = cv2.INTER_AREA if side > crop_size else cv2.INTER_LINEAR
    return cv2.resize(window, (crop_size, crop_size), interpolation=interp)


def pretrain_crops(seed: int, part: str, index: int, image_size: int = 128,
                   difficulty: Optional[syn.ShapesDifficulty] = None,
                   crop_size: int = 64) -> List[Tuple[np.ndarray, int]]:
    """``(crop, class index 0-9)`` for every object of one pretraining scene (the objects the
    generator keeps, i.e. at most ``occlusion_limit`` hidden)."""
    img, objects = pretrain_scene(seed, part, index, image_size, difficulty)
    return [(object_crop(img, o['bbox'], crop_size), o['category_id'] - 1) for o in objects]


@DATASETS.register_module()
class SyntheticShapeCropDataset(BaseDataset):
    """The object crops of ``num_images`` pretraining scenes of one ``part`` (pretrain |
    pretrain_val), drawn when the dataset is built (~2 ms a scene) and held in memory (12 KB a
    64-px crop): redrawing the scene of every crop each epoch would cost as much as training
    on it."""

    METAINFO = dict(classes=syn.SHAPES_CLASSES)

    def __init__(self, num_images: int, part: str = 'pretrain', seed: int = 0,
                 image_size: int = 128, crop_size: int = 64, difficulty: Optional[Dict] = None,
                 **kwargs):
        if part not in PRETRAIN_SPLIT_IDS:
            raise ValueError(f'part must be one of {tuple(PRETRAIN_SPLIT_IDS)}, got {part!r}')
        if int(num_images) < 1:
            raise ValueError(f'num_images must be >= 1, got {num_images}')
        self.num_images, self.part, self.seed = int(num_images), part, int(seed)
        self.image_size, self.crop_size = int(image_size), int(crop_size)
        self.difficulty = syn.make_difficulty(KIND, **dict(difficulty or {}))
        kwargs.setdefault('serialize_data', False)  # arrays stay arrays, no pickling
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self):
        return [dict(img=crop, gt_label=label, scene=i)
                for i in range(self.num_images)
                for crop, label in pretrain_crops(self.seed, self.part, i, self.image_size,
                                                  self.difficulty, self.crop_size)]


@TRANSFORMS.register_module()
class PackCropInputs(BaseTransform):
    """``img`` (HWC uint8 BGR) -> ``inputs`` (CHW uint8 tensor; the model's
    ``ImgDataPreprocessor`` then normalises it exactly like the detectors' inputs); the class
    index becomes the sample's ``data_samples``."""

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results['img'].transpose(2, 0, 1))
        return {'inputs': torch.from_numpy(img),
                'data_samples': torch.tensor(int(results['gt_label']))}
