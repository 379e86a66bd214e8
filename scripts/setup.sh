#!/usr/bin/env bash
# Set up ./.venv with a CPU build of torch and shufflenas (editable).
#   scripts/setup.sh          the tool itself
#   scripts/setup.sh --test   plus the test tools and the system packages the tests drive
# Safe to re-run: it only installs what is missing. Override the torch requirement with
# TORCH_SPEC (e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

quiet_pip() {  # pip's "Location ... is ignored" lines are noise from an extra index here
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored" || true
    return "${PIPESTATUS[0]}"
}

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || quiet_pip ${TORCH_SPEC:-torch==2.13.0}

if [ "$want_test" = 1 ]; then
    quiet_pip -e ".[test]"
    bash scripts/system-deps.sh
else
    quiet_pip -e ".[standard]"  # everything but the [mobile] extra (ExecuTorch), which the tests install
fi
# The fused BatchNorm training kernels, compiled once for this machine (about 15 s; needs a C++
# compiler and ninja). Without them training runs PyTorch's own ops: same results, slower.
.venv/bin/python -m shufflenet_core.fused || echo "  (training will use PyTorch's own ops)"
.venv/bin/nas --version
