#!/usr/bin/env bash
# Set up the environment and run the main job on its built-in default: `plw-plugins demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
exec .venv/bin/plw-plugins demo "$@"
