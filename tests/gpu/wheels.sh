#!/usr/bin/env bash
# Re-creates .whl/ (repo root): the Python 3.12 x86-64 wheels that `transformers serve` and
# GuideLLM need on the GPU machine beyond what its image already holds (torch, numpy,
# transformers 5.17, pyarrow, pandas, httpx, anyio, click, rich, uvloop, … — see
# /work/.library/device/KINDS.md, "Python packages already there").
#
# Versions are pinned: the closure of `guidellm==0.8.1` + `transformers[serving]==5.17.0`
# as pip resolved it (2026-12), minus the packages on the device (but click and typer, see
# below), minus
#   - sanic, sanic-routing, html5tagger, tracerite, httptools, ujson: only GuideLLM's
#     `mock-server` command imports sanic; the benchmark path does not;
#   - tzdata (faker wants it on Windows only), nvidia-cuda-cccl (a torch dependency).
#
#   tests/gpu/wheels.sh                 # Python 3.12 manylinux wheels into .whl/ (the device)
#   PYVER=3.11 DEST=/tmp/w311 tests/gpu/wheels.sh   # same set for a local CPU test env
#
# Install (run.sh does this):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/../.."
PYVER=${PYVER:-3.12}
DEST=${DEST:-.whl}

PKGS=(
  # transformers serve (transformers[serving] minus what the device has)
  fastapi==0.165.0 starlette==1.10.0 opentelemetry-api==1.45.3
  uvicorn==0.55.0
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  openai==3.63.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 jiter==0.19.0 sniffio==1.3.1
  # GuideLLM
  guidellm==0.8.1
  culsans==0.10.0 aiologic==0.17.1
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  eval-type-backport==0.4.0 faker==40.63.0 ftfy==6.3.1 wcwidth==0.9.5
  h2==4.4.1 hpack==4.2.0 hyperframe==6.1.0
  loguru==0.7.3 more-itertools==11.2.1 websockets==17.4
  pydantic-settings==2.16.3 python-dotenv==1.2.4
  # GuideLLM pins click~=8.4.0; the device's click version is not known, and typer (the
  # transformers CLI) must match click: carry both, a pair that works together.
  click==8.4.2 typer==0.29.2
  # pydantic 2.14 needs typing-extensions>=4.16, openai/httpx2 anyio>=4.10: the device's
  # versions are not known; both stay backward compatible, so carry them.
  typing-extensions==4.16.0 anyio==4.16.0
)

rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${PKGS[@]}"
n=$(ls "$DEST"/*.whl | wc -l)
echo "wheels.sh: $n wheels in $DEST, $(du -sh "$DEST" | cut -f1)"
if [ "$n" -ne "${#PKGS[@]}" ]; then
  echo "wheels.sh: expected ${#PKGS[@]} wheels" >&2
  exit 1
fi
