#!/usr/bin/env bash
# The GPU check (issue 19 part 3): one command, under 6 minutes on one GPU.
#
#   benchmarks/gpu_check.sh               # paper preset, random bundle-format weights, 160x192x160 head, on cuda
#   benchmarks/gpu_check.sh --dry-run     # the same code on the CPU with a tiny paper-shaped network (seconds)
#
# Prints seconds per UNet+ControlNet step at fp32 and bf16 (SDPA), the DDIM-50
# synthesis with one decode, the random distilled student's synthesis, peak
# memory and the ratio of time to the FLOP bound; the last line is key=value.
# Every option of benchmarks/gpu_check.py is passed on (--help lists them).
# GPU_CHECK_TIMEOUT (seconds, default 360) stops a run that overstays its budget.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export NIPYPE_NO_ET="${NIPYPE_NO_ET:-1}"
exec timeout "${GPU_CHECK_TIMEOUT:-360}" "${PYTHON:-python}" -u "$here/gpu_check.py" "$@"
