#!/usr/bin/env bash
# Create the project's virtual environments (idempotent), on the versions CI has passed with:
#   .venv           TRL, transformers, Lightning              pinned by constraints/venv.txt
#   .venv-axolotl   Axolotl with the TRL/transformers it pins  pinned by constraints/venv-axolotl.txt (--axolotl)
# With --newest, the same extras go into .venv-newest (and .venv-axolotl-newest) at the newest releases
# the registry has today, ignoring the pins: that is what `bash scripts/test.sh --newest` tests against.
# torch==2.13.0 goes in first so that nothing pulls a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
axolotl=0 newest=0
for arg in "$@"; do
  case $arg in
    --axolotl) axolotl=1 ;;
    --newest) newest=1 ;;
    *) echo "usage: bash scripts/setup.sh [--axolotl] [--newest]" >&2; exit 2 ;;
  esac
done

make_env() {  # make_env DIR CONSTRAINTS EXTRAS...
  local dir=$1 constraints=$2; shift 2
  if [ ! -x "$dir/bin/python" ]; then "$PYTHON" -m venv "$dir"; fi
  "$dir/bin/pip" install -q torch==2.13.0
  if [ "$newest" = 1 ]; then
    # Naming torch keeps the eager upgrade from replacing it with the newest (CUDA) build.
    "$dir/bin/pip" install -q --upgrade --upgrade-strategy eager "$@" torch==2.13.0
  else
    "$dir/bin/pip" install -q -c "$constraints" "$@"
  fi
  "$dir/bin/pip" install -q --no-deps -e .
}

# DeepSpeed (for the ZeRO tests, run on CPU) installs without compiling its ops.
export DS_BUILD_OPS=0
suffix=$([ "$newest" = 1 ] && echo -newest || true)
make_env ".venv$suffix" constraints/venv.txt -e ".[dev]" deepspeed
if [ "$axolotl" = 1 ]; then
  make_env ".venv-axolotl$suffix" constraints/venv-axolotl.txt -e ".[axolotl]" pytest hypothesis deepspeed
fi
