#!/usr/bin/env bash
# Regenerate the embedded demo model (demist_bids/data/models/demo) from scratch.
#
# The demo model is the `small` preset (2x latent) trained on a synthetic demist-phantom
# cohort (seed 0) with a longer recipe than the preset's default, then checked
# on a fresh phantom cohort (seed 23, never used while the recipe was developed;
# seeds 7 and 11 were) against the voxel-wise linear baseline.
# It is NOT a clinical model. Runs on a 2-core CPU in about an hour.
#
# Usage: scripts/make_demo_model.sh [WORK_DIR]   (default: ./demo-model-work)
set -euo pipefail
export NIPYPE_NO_ET=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY=PASSIVE
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(realpath -m "${1:-demo-model-work}")"
DEST="$REPO/demist_bids/data/models/demo"
mkdir -p "$WORK"

# 1. Training cohort and a fresh test cohort (another seed), at the demo's scale.
[ -d "$WORK/train_bids" ] || demist-phantom "$WORK/train_bids" --subjects 8 --seed 0 --scale 0.6
[ -d "$WORK/test_bids" ] || demist-phantom "$WORK/test_bids" --subjects 8 --seed 23 --scale 0.6

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

# 2. The demo recipe: the small preset's networks, ~10x the default steps.
cat > "$WORK/demo_recipe.toml" <<'TOML'
steps_per_epoch = 50
[steps]
ae = 2500
align = 2000
backbone = 600
diffusion = 1500
TOML

# 3. Train on every subject (no cross-validation: the test cohort plays that role).
python - "$WORK" <<'PY'
import logging, sys
from pathlib import Path
from demist_bids.config import Config
from demist_bids.training import run_train

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
work = Path(sys.argv[1])
config = Config()
config.execution.bids_dir = work / "train_bids"
config.execution.output_dir = work / "train_out"
config.execution.work_dir = work / "work"
config.execution.analysis_level = "train"
config.train.preset = "small"
config.train.folds = 1
config.train.recipe = work / "demo_recipe.toml"
config.train.resume = True  # rerunning the script continues an interrupted training
config.seeds.master = 0
raise SystemExit(run_train(config))
PY

# 3b. Sample from the aligned conditioning latent (sampling.start = 0.15, fixed beforehand, not tuned
#     on the test cohort): from pure noise this small CPU-trained model's streams cannot steer the
#     backbone (the earlier 4x demo model: 5.7 dB on the seed-7 cohort, 20.8 dB from 0.15). The weights are stored as
#     float16 (half the size; loaded as float32), before the benchmark and the validation measure them.
python - "$WORK/train_out/model" <<'PY'
import sys
from pathlib import Path
from demist_bids.models.io import load_model, save_model
from demist_bids.training.model_card import write_model_card
directory = Path(sys.argv[1])
model = load_model(directory)
sampling = model.config.sampling
sampling.sampler, sampling.steps, sampling.start = "ddim", 10, 0.15
save_model(model, directory, weights="float16")
write_model_card(directory)
PY

# 3c. The default sampler: the fastest option within 0.3 dB of DDPM over every timestep below the same
#     start, on a third phantom seed (11) so the test cohort stays untouched (benchmarks/README.md).
python "$REPO/benchmarks/sampler_speed.py" --model "$WORK/train_out/model" --phantom-seed 11 \
    --phantom-work "$WORK/benchmark" --reference-start 0.15 --write-choice | tee "$WORK/sampler_choice.txt"

# 4. External validation on the fresh cohort, against the linear baseline fitted on the training cohort.
python -m demist_bids.evaluation.external --model "$WORK/train_out/model" \
    --train-bids "$WORK/train_bids" --test-bids "$WORK/test_bids" --out "$WORK/external" \
    --work "$WORK/work" --seed 0 | tee "$WORK/external_summary.txt"

# 4b. Confirmatory validation, declared before it was first run (session 6): a larger fresh cohort
#     (20 subjects, seed 41, never used before) so that the paired tests have the power to call a
#     difference. "Clearly better" means paired Wilcoxon p < 0.05 on PSNR and on lesion AUC.
[ -d "$WORK/confirm_bids" ] || demist-phantom "$WORK/confirm_bids" --subjects 20 --seed 41 --scale 0.6
python -m demist_bids.evaluation.external --model "$WORK/train_out/model" \
    --train-bids "$WORK/train_bids" --test-bids "$WORK/confirm_bids" --out "$WORK/external_confirm" \
    --work "$WORK/work" --test-cache confirm_preproc --seed 0 | tee "$WORK/external_confirm_summary.txt"

# 5. Ship it: weights, config (with the card) and README, plus the external validation table.
rm -rf "$DEST.new" && cp -r "$WORK/train_out/model" "$DEST.new" && chmod -R a+rX,u+w "$DEST.new"
cp "$WORK/external/evaluation_summary.tsv" "$DEST.new/external_validation.tsv"
cp "$WORK/external_confirm/evaluation_summary.tsv" "$DEST.new/external_validation_confirm.tsv"
python - "$DEST.new" "$WORK/external/evaluation_summary.tsv" "$WORK/external_confirm/evaluation_summary.tsv" <<'PY'
import sys
from pathlib import Path
from demist_bids.training.model_card import append_external_validation
append_external_validation(Path(sys.argv[1]), Path(sys.argv[2]),
                           "a fresh demist-phantom cohort (8 subjects, seed 23, scale 0.6)")
append_external_validation(Path(sys.argv[1]), Path(sys.argv[3]),
                           "a larger fresh demist-phantom cohort (20 subjects, seed 41, scale 0.6; "
                           "confirmatory, success criterion declared before the run)")
PY
rm -rf "$DEST" && mv "$DEST.new" "$DEST"
du -sh "$DEST"
