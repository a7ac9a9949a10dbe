#!/usr/bin/env bash
# Fig. 3 pilot at 256 px (README.md here): the mini ATSS teacher and student recipes on the mini
# shapes data drawn at 256 instead of 128 px. Run from the repository root after the mini DAG
# has made its SYNTHETIC backbone pretraining (results/mini/pretrain/mini_r{18,34}/backbone.pth),
# e.g. `snakemake --cores all results/mini/pretrain/mini_r34/backbone.pth
# results/mini/pretrain/mini_r18/backbone.pth`. Writes to results/pilot_256px/ (not committed);
# about 40 min of CPU on 2 cores. One thread per job, like the DAG's jobs. TRAIN_OPTS adds
# --cfg-options to both trainings (e.g. TRAIN_OPTS=train_cfg.max_epochs=1 for a quick check).
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
O=results/pilot_256px                    # outputs
DATA=data/synthetic/pilot_256px/shapes
PY=${PYTHON:-.venv/bin/python}
TRAIN_OPTS=${TRAIN_OPTS:-}
mkdir -p "$O"
# the mini dataset (config/config.yaml: datasets.shapes) with --image-size 256
$PY -m pgd make-data --kind shapes --out $DATA --num-train 640 --num-val 200 --image-size 256 \
  --seed 0 --difficulty max_objects=5 noise=3 bg_lines=3 distractors=2 texture_prob=0.3 \
  clutter_color_match=0.2 blur_prob=0.1 min_size=0.3 max_size=0.9 color_jitter=0.1 \
  occlusion_limit=0.5
$PY -m pgd geometry --ann $DATA/annotations/synthetic_shapes_train.json --k 30 \
  --json $O/geometry.json mini/atss_r18_student --cfg-options image_size=256
# teacher and student side by side, as the DAG runs two 1-thread jobs on 2 cores
$PY -m pgd train mini/atss_r34_teacher --work-dir $O/runs/atss_r34_teacher --seed 0 \
  --data-root $DATA --cfg-options pretrain_scale=mini image_size=256 $TRAIN_OPTS \
  > $O/teacher.log 2>&1 &
TEACHER=$!
$PY -m pgd train mini/atss_r18_student --work-dir $O/runs/atss_r18_student --seed 0 \
  --data-root $DATA --cfg-options pretrain_scale=mini image_size=256 train_cfg.val_interval=2 \
  $TRAIN_OPTS
  > $O/student.log 2>&1 &
STUDENT=$!
wait $TEACHER || { echo "teacher training failed: $O/teacher.log" >&2; exit 1; }
wait $STUDENT || { echo "student training failed: $O/student.log" >&2; exit 1; }
$PY -m pgd test mini/atss_r18_student $O/runs/atss_r18_student/final.pth \
  --data-root $DATA --out $O/metrics_atss_r18_student.json --cfg-options image_size=256
$PY -m pgd mask-out --config mini/atss_r34_teacher --cfg-options image_size=256 \
  --checkpoint $O/runs/atss_r34_teacher/final.pth --data-root $DATA \
  --ratios 0,0.01,0.02,0.05,0.1 --out $O/mask_out_atss_r34_teacher.json
for r in atss_r34_teacher atss_r18_student; do
  $PY -m pgd training-log $O/runs/$r --out $O/training_log_$r.json
done
$PY -m pgd regime --mask-out $O/mask_out_atss_r34_teacher.json --geometry $O/geometry.json \
  --training-log $O/training_log_atss_r18_student.json --out $O/regime.json --md $O/regime.md
