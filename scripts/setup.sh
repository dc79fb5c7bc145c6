#!/usr/bin/env bash
# Create the project's virtual environments (idempotent): .venv with the newest TRL, transformers and
# Lightning; with --axolotl also .venv-axolotl with Axolotl 0.19 and the older TRL/transformers it pins.
# torch==2.13.0 goes in first so that nothing pulls a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

make_env() {  # make_env DIR EXTRAS...
  local dir=$1; shift
  if [ ! -x "$dir/bin/python" ]; then "$PYTHON" -m venv "$dir"; fi
  "$dir/bin/pip" install -q torch==2.13.0
  "$dir/bin/pip" install -q "$@"
  "$dir/bin/pip" install -q --no-deps -e .
}

# DeepSpeed (for the ZeRO tests, run on CPU) installs without compiling its ops.
export DS_BUILD_OPS=0
make_env .venv -e ".[dev]" deepspeed==0.19.0
if [ "${1:-}" = "--axolotl" ]; then
  make_env .venv-axolotl -e ".[axolotl]" pytest hypothesis deepspeed==0.19.0
fi
