"""pgd -- reproduction pipeline for Prediction-Guided Distillation (ECCV 2022) and competitors.

Reading order follows the data: ``pgd.data`` (synthetic datasets, CrowdHuman converter) ->
``config/detectors`` (MMDetection configs) -> ``pgd.engine`` (train/test with MMEngine's Runner)
-> ``pgd.distill`` (distiller, PGW, one loss file per method) -> ``pgd.evaluation`` (COCO and
crowd metrics) -> ``pgd.tables`` (paper-style tables).
"""
__version__ = '0.1.0'
