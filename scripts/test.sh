#!/usr/bin/env bash
# Set up both environments and run the whole test suite: everything but Axolotl in .venv (TRL,
# transformers, Lightning), then the TRL and Axolotl tests in .venv-axolotl (Axolotl with the older TRL
# and transformers it pins). Both on the pinned versions (constraints/); with --newest as the first
# argument, on the newest releases instead (.venv-newest, .venv-axolotl-newest). Other arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
suffix=""
if [ "${1:-}" = "--newest" ]; then suffix=-newest; shift; fi
bash scripts/setup.sh --axolotl ${suffix:+--newest} || exit 1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1 \
  TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled

run_pytest() {  # exit 5 means no test was collected: not a failure of the suite
  "$@"; local rc=$?
  if [ $rc -eq 5 ]; then echo "no tests collected: $*"; rc=0; fi
  return $rc
}

versions() {  # the versions an environment tests, on one line
  "$1/bin/python" - <<'PY'
from importlib.metadata import PackageNotFoundError, version
names = ("torch", "transformers", "trl", "lightning", "axolotl", "accelerate", "peft", "deepspeed", "datasets")
found = []
for name in names:
    try:
        found.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        pass
print(", ".join(found))
PY
}

status=0
echo "== .venv$suffix: $(versions ".venv$suffix")"
run_pytest ".venv$suffix/bin/python" -m pytest -q --ignore=tests/axolotl "$@" || status=1
echo "== .venv-axolotl$suffix: $(versions ".venv-axolotl$suffix")"
run_pytest ".venv-axolotl$suffix/bin/python" -m pytest -q tests/axolotl tests/trl "$@" || status=1
exit $status
