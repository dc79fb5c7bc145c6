#!/usr/bin/env bash
# Move the pins forward: write constraints/ from the environments `bash scripts/test.sh --newest`
# built. Run it only after that run has passed, and commit constraints/ with the README's versions.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() {  # pin ENV FILE
  [ -x "$1/bin/pip" ] || { echo "$1 is missing: run bash scripts/test.sh --newest first" >&2; exit 1; }
  {
    echo "# The versions scripts/setup.sh installs in ${1%-newest} (CI's too); written by scripts/pin.sh."
    # torch's local label (+cpu) would not match a CUDA build of the same release.
    "$1/bin/pip" freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'
  } >"$2"
  echo "wrote $2"
}
pin .venv-newest constraints/venv.txt
pin .venv-axolotl-newest constraints/venv-axolotl.txt
