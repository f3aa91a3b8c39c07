#!/usr/bin/env bash
# Builds the FROM-scratch vllm-sim image (deploy/docker/vllm-sim.Dockerfile) alone:
#
#  1. a fully static vllm-sim, linked against glibc's static libraries (crt-static; no musl
#     target needed): target/<host-triple>/release/vllm-sim, checked to be static;
#  2. `docker build` with a context that holds only that binary (nothing of the repository or
#     of target/ is sent), tagged $FLEETBENCH_SIM_IMAGE (default fleetbench/vllm-sim:dev).
#
# The work is deploy/docker/build-images.sh's (which also builds the controller and agent
# images); this runs it for the sim image only. Needs cargo, glibc's static libraries
# (libc.a: Debian/Ubuntu libc6-dev), file, ldd and a Docker engine; pulls nothing (FROM
# scratch). Usage:
#
#   deploy/docker/build-sim-image.sh
#   FLEETBENCH_SIM_IMAGE=registry.example/vllm-sim:1 deploy/docker/build-sim-image.sh
#   docker run --rm -p 127.0.0.1:8000:8000 fleetbench/vllm-sim:dev --model m
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ -x "$here/build-images.sh" ]] || {
    echo "build-sim-image: $here/build-images.sh not found or not executable" >&2
    exit 1
}
FLEETBENCH_BUILD_SCRIPT_NAME=build-sim-image exec "$here/build-images.sh" vllm-sim
