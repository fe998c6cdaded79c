#!/usr/bin/env bash
# Regenerate the embedded demo model (demist_bids/data/models/demo) from scratch.
#
# The demo model is the `small` preset (2x latent) trained on a synthetic demist-phantom
# cohort (seed 0) with a longer recipe than the preset's default; its sampler is chosen on a
# development phantom (seed 11) and it is scored once on a fresh test cohort (seed 89 since session 10; 67 before; declared
# below before it was generated) beside the previous demo model and every baseline.
# It is NOT a clinical model. About 1.5 h on a 2-core CPU with the shipped autoencoders reused.
#
# Usage: scripts/make_demo_model.sh [WORK_DIR]   (default: ./demo-model-work)
set -euo pipefail
export NIPYPE_NO_ET=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY=PASSIVE
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(realpath -m "${1:-demo-model-work}")"
DEST="$REPO/demist_bids/data/models/demo"
mkdir -p "$WORK"

# 1. Training cohort, at the demo's scale.
[ -d "$WORK/train_bids" ] || demist-phantom "$WORK/train_bids" --subjects 8 --seed 0 --scale 0.6

# 1b. Issue #16 (the diffusion model must do the work), declared before any model is scored on it:
#     every choice of recipe and sampler is made on the development cohort (seed 11, 6 subjects;
#     benchmarks/stream_diagnostics.py and the sampler benchmark use seed 11 too). The test cohort
#     is seed 67, 12 subjects, scale 0.6, never generated before this commit; it is scored once, at
#     the end, for the new model and for the previous demo model side by side. Targets (#16 §3):
#     the paper's sampler (pure noise, <= 20 DDIM steps, mean of <= 4 samples) within 0.3 dB PSNR of
#     decoding z_c (no diffusion) or above, >= 2 dB above the linear baseline, lesion AUC >= no
#     diffusion's; the new default >= the previous demo model's default PSNR and lesion AUC.
[ -d "$WORK/dev_bids" ] || demist-phantom "$WORK/dev_bids" --subjects 6 --seed 11 --scale 0.6
TEST16_SEED=67
[ -d "$WORK/test16_bids" ] || demist-phantom "$WORK/test16_bids" --subjects 12 --seed $TEST16_SEED --scale 0.6
# Seed 67 was scored in session 8 and is used. Session 10 declares a second test cohort here, before it
# is generated: seed 89, 8 subjects, scale 0.6. It is scored once, for the anchored candidate (the
# issue-16 candidate with its x0 estimate blended towards z_c per timestep and channel, weights fitted on
# training patches; sampler settings chosen on the development cohort, seed 11) and for the shipped
# model side by side. Same targets and the same shipping gate as above (candidate default >= the
# shipped default's PSR PSNR and lesion AUC on this cohort).
TEST_ANCHOR_SEED=89
[ -d "$WORK/test_anchor_bids" ] || demist-phantom "$WORK/test_anchor_bids" --subjects 8 --seed $TEST_ANCHOR_SEED --scale 0.6

# 2. The demo recipe (issue #16): v-prediction backbone and streams with per-channel standardized latents
#    (the small preset), batch 4, streams' zero joins at 10x the learning rate (scripts/demo_recipe_issue16.toml).
cp "$REPO/scripts/demo_recipe_issue16.toml" "$WORK/demo_recipe.toml"

# 3. Train on every subject (no cross-validation: the test cohort plays that role). The shipped demo's
#    autoencoders (ae 2500 + align 2000 steps on this cohort, session 6) are reused with --autoencoders-from
#    when it is there, so only the backbone and the streams are trained (~1 h on 2 cores); from scratch the
#    recipe's ae and align steps train them first.
python - "$WORK" "$DEST" <<'PY'
import logging, sys
from pathlib import Path
from demist_bids.config import Config
from demist_bids.training import run_train

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
work, shipped = Path(sys.argv[1]), Path(sys.argv[2])
config = Config()
config.execution.bids_dir = work / "train_bids"
config.execution.output_dir = work / "train_out"
config.execution.work_dir = work / "work"
config.execution.analysis_level = "train"
config.train.preset = "small"
config.train.folds = 1
config.train.recipe = work / "demo_recipe.toml"
config.train.resume = True  # rerunning the script continues an interrupted training
config.train.autoencoders_from = shipped if (shipped / "config.json").exists() else None
config.seeds.master = 0
raise SystemExit(run_train(config))
PY
[ -d "$WORK/previous_demo" ] || { [ -d "$DEST" ] && cp -r "$DEST" "$WORK/previous_demo"; } || true

# 3b. The sampler, chosen on the development cohort only (seed 11, 6 whole brains). Session 10: the train
#     level fits the blend of the clean-latent estimate towards z_c after the streams (recipe anchor_batches;
#     for a model trained before that, scripts/fit_anchor.py does the same); the grid scores pure-noise DDIM
#     with that blend against decoding z_c (benchmarks/dev_ablations.py score --grid anchored).
#     Weights are stored as float16 (half the size; loaded as float32).
[ -f "$WORK/dev.npz" ] || python "$REPO/benchmarks/dev_ablations.py" pack --bids "$WORK/dev_bids" --work "$WORK/work" \
    --cache dev_preproc --out "$WORK/dev.npz"
python "$REPO/benchmarks/dev_ablations.py" score --model "$WORK/train_out/model" --dev "$WORK/dev.npz" \
    --out "$WORK/dev_anchor_scores" --grid anchored --device cpu | tee "$WORK/dev_anchor_scores.txt"
# Session 10, on the 6 development scans (fp32, PSNR inside the brain, mean; no diffusion 22.65 dB): the blend
# fitted on the forward process, DDIM-10: 22.66; fitted along DDIM-10 chains: 22.75 (bf16: 22.68); fitted along
# DDIM-4 chains, DDIM-4: 22.70, above no diffusion on 5 of 6 scans. Chosen: DDIM-4 with the blend fitted along
# DDIM-4 chains, fp32 (8 network passes per scan with guidance, against 20 for DDIM-10: the default runs in
# every participant run and in CI on 2 cores; +0.05 dB for 2.5x fewer passes than the best row).
DEFAULT_STEPS=4
python - "$WORK/train_out/model" "$DEFAULT_STEPS" <<'PY'
import sys
from pathlib import Path
from demist_bids.models.io import load_model, save_model
from demist_bids.training.model_card import write_model_card
directory, steps = Path(sys.argv[1]), int(sys.argv[2])
model = load_model(directory)
sampling = model.config.sampling
sampling.sampler, sampling.steps, sampling.start, sampling.guidance, sampling.precision = "ddim", steps, 1.0, 1.5, "fp32"
save_model(model, directory, weights="float16")
write_model_card(directory)
PY
python "$REPO/benchmarks/stream_diagnostics.py" --model "$WORK/train_out/model" --steps "$DEFAULT_STEPS" \
    | tee "$WORK/dev_stream_diagnostics.txt"

# 4. The declared session-10 test cohort (seed 89), scored once: the new model (its default and every
#    baseline row) and the previous demo model side by side, against the U-Net regressor trained on the
#    training cohort (3000 steps at batch 2) and the linear baseline.
demist-evaluate --model "$WORK/train_out/model" \
    --train-bids "$WORK/train_bids" --test-bids "$WORK/test_anchor_bids" --out "$WORK/external_anchor" \
    --work "$WORK/work" --test-cache test_anchor_preproc --seed 0 --regressor "$WORK/regressor" \
    --train-regressor --regressor-steps 3000 --paper-samples 0 | tee "$WORK/external_anchor_summary.txt"
[ ! -d "$WORK/previous_demo" ] || demist-evaluate --model "$WORK/previous_demo" \
    --train-bids "$WORK/train_bids" --test-bids "$WORK/test_anchor_bids" --out "$WORK/external_anchor_previous" \
    --work "$WORK/work" --test-cache test_anchor_preproc --seed 0 --regressor "$WORK/regressor" \
    --paper-samples 0 | tee "$WORK/external_anchor_previous_summary.txt"

# 5. Ship it or keep the previous model (the gate declared with the test cohort: the candidate's default
#    must score at least the previous model's default PSNR and lesion AUC on it); either way the card
#    gains the test tables.
[ -d "$WORK/previous_demo" ] || { echo "no previous demo model to compare with" >&2; exit 1; }
python "$REPO/scripts/record_demo_card.py" "$WORK/train_out/model" "$WORK/previous_demo" "$DEST" "$WORK" \
    external_anchor | tee "$WORK/shipping_decision.txt"
chmod -R a+rX,u+w "$DEST.new" && rm -rf "$DEST" && mv "$DEST.new" "$DEST"
du -sh "$DEST"

# 6. Issue #19 (session 11): the shipped model's sampler distilled into a 4-step student without guidance
#    (one network pass per step instead of two). The student imitates the teacher's own sampler, guidance 1.5
#    and the blend towards z_c included, at DDIM-8 (one round, 300 Adam steps at batch 4, lr 1e-4;
#    scripts/demo_recipe_distill.toml), on the training cohort; it keeps the teacher's blend weights.
#    Chosen on the development cohort (seed 11, 6 whole brains; each model scored as dev_ablations.py score
#    does, PSNR inside the brain / voxel-wise lesion AUC / seconds per scan on 2 cores; --grid own below):
#      no diffusion 22.65; the teacher's default (DDIM-4, guidance 1.5, fp32) 22.70 / 0.972 / ~50 s;
#      the teacher at guidance 1 (4 passes, no distillation) 22.74 / 0.971;
#      student, 300 steps at batch 4: fp32 22.80 / 0.972 / 17 s, bf16 22.73 / 0.972 / 9 s;
#      student, 1000 steps at batch 8: fp32 22.75 / 0.972 / 18 s, bf16 22.68 / 0.971 / 9 s.
#    Chosen: the 300-step student in bf16 (on CPUs with native bf16 and on CUDA; fp32 elsewhere), the fastest
#    row at least as good as the teacher's default in PSNR and lesion AUC; issue 19 part 2 needs the speed.
#    Declared here before it is generated: a third test cohort, seed 131, 8 subjects, scale 0.6, scored once
#    with the demo model and its student (demist-evaluate: the demist row is the student, demist-teacher the
#    shipped DDIM-4 sampler with guidance, beside no diffusion, backbone only, the autoencoder ceiling, the U-Net
#    regressor and the linear baseline), and one subject of seed 131 in benchmarks/sampler_speed.py (the
#    student against the teacher's DDIM-50 and DDPM-1000 from pure noise). The gate for shipping the student
#    (then the participant level's default): on the seed-131 cohort its PSNR at least the teacher default's
#    minus 0.3 dB (issue 19's tolerance) and its voxel-wise lesion AUC at least the teacher default's minus 0.005.
TEST_STUDENT_SEED=131
[ -d "$WORK/test_student_bids" ] || demist-phantom "$WORK/test_student_bids" --subjects 8 --seed $TEST_STUDENT_SEED --scale 0.6
DISTILL_OUT="$WORK/distill_out"
mkdir -p "$DISTILL_OUT" && [ -d "$DISTILL_OUT/model" ] || cp -r "$DEST" "$DISTILL_OUT/model"
demist "$WORK/train_bids" "$DISTILL_OUT" train --stage distill --preset small --folds 1 \
    --train-recipe "$REPO/scripts/demo_recipe_distill.toml" --work-dir "$WORK/work" --resume --seed 0
python - "$DISTILL_OUT/model/student" <<'PY'
import sys
from pathlib import Path
from demist_bids.models.io import load_model, save_model
student = load_model(Path(sys.argv[1]))
student.config.sampling.precision = "bf16"  # chosen on the development cohort (above)
save_model(student, Path(sys.argv[1]), weights="float16")  # as the teacher is stored
PY
python "$REPO/benchmarks/dev_ablations.py" score --model "$DISTILL_OUT/model/student" --dev "$WORK/dev.npz" \
    --out "$WORK/dev_student_scores" --grid own --label student --device cpu | tee "$WORK/dev_student_scores.txt"
demist-evaluate --model "$DISTILL_OUT/model" --train-bids "$WORK/train_bids" --test-bids "$WORK/test_student_bids" \
    --out "$WORK/external_student" --work "$WORK/work" --test-cache test_student_preproc --seed 0 \
    --regressor "$WORK/regressor" --paper-samples 0 | tee "$WORK/external_student_summary.txt"
python "$REPO/benchmarks/sampler_speed.py" --model "$DISTILL_OUT/model" --phantom-seed $TEST_STUDENT_SEED \
    | tee "$WORK/sampler_speed_student.txt"
python "$REPO/scripts/ship_student.py" "$DISTILL_OUT/model/student" "$DEST" "$WORK/external_student" \
    | tee "$WORK/student_decision.txt"
