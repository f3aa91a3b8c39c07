#!/usr/bin/env bash
# Builds the FROM-scratch vllm-sim image (deploy/docker/vllm-sim.Dockerfile):
#
#  1. a fully static vllm-sim, linked against glibc's static libraries (crt-static; no musl
#     target needed): target/<host-triple>/release/vllm-sim, checked to be static;
#  2. `docker build` with a context that holds only that binary (nothing of the repository or
#     of target/ is sent), tagged $FLEETBENCH_SIM_IMAGE (default fleetbench/vllm-sim:dev).
#
# Needs cargo, glibc's static libraries (libc.a: Debian/Ubuntu libc6-dev), file, ldd and a
# Docker engine; pulls nothing (FROM scratch). Usage:
#
#   deploy/docker/build-sim-image.sh
#   FLEETBENCH_SIM_IMAGE=registry.example/vllm-sim:1 deploy/docker/build-sim-image.sh
#   docker run --rm -p 127.0.0.1:8000:8000 fleetbench/vllm-sim:dev --model m
set -euo pipefail

image="${FLEETBENCH_SIM_IMAGE:-fleetbench/vllm-sim:dev}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dockerfile="$here/vllm-sim.Dockerfile"
cd "$root"

die() {
    echo "build-sim-image: $*" >&2
    exit 1
}

for tool in cargo rustc docker file ldd; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
# Fail before a several-minute compile if the engine is not there.
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    die "cannot reach the Docker engine (docker version failed)"

# The host triple, e.g. x86_64-unknown-linux-gnu. Passing --target, even the host's, keeps
# RUSTFLAGS (and so crt-static) off build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
case "$triple" in
*-linux-gnu) ;;
*) die "host $triple: this script links statically against glibc (*-linux-gnu only)" ;;
esac

started=$SECONDS
echo "build-sim-image: cargo build --release -p fleetbench-sim --bin vllm-sim --target $triple (crt-static)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p fleetbench-sim --bin vllm-sim --target "$triple"
bin="${CARGO_TARGET_DIR:-$root/target}/$triple/release/vllm-sim"
[[ -x "$bin" ]] || die "$bin was not built"

# Statically linked, or the image (which has no libc, no loader) cannot start it.
kind="$(file -b "$bin")"
case "$kind" in
*"statically linked"* | *"static-pie linked"*) ;;
*) die "$bin is not statically linked: $kind" ;;
esac
deps="$(ldd "$bin" 2>&1 || true)"
case "$deps" in
*"not a dynamic executable"* | *"statically linked"*) ;;
*) die "$bin needs shared libraries: $deps" ;;
esac
sim_version="$("$bin" --version)" || die "$bin --version failed"
echo "build-sim-image: $bin: ${kind%%,*}, static; $sim_version" >&2

# The build context: the binary and nothing else (the Dockerfile is passed with -f).
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/context"
cp "$bin" "$work/context/vllm-sim"
if command -v strip >/dev/null; then
    strip --strip-all "$work/context/vllm-sim"
fi

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
revision="unknown"
if git -C "$root" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    revision="$(git -C "$root" rev-parse HEAD)"
    if [[ -n "$(git -C "$root" status --porcelain 2>/dev/null)" ]]; then
        revision="$revision-dirty"
    fi
fi
if [[ -n "${SOURCE_DATE_EPOCH:-}" ]]; then
    created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
else
    created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fi

# Without the buildx plugin, recent Docker CLIs fall back to the legacy builder only when
# BuildKit is not requested.
if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi
echo "build-sim-image: docker build -t $image (context: the binary only)" >&2
docker build \
    --file "$dockerfile" \
    --tag "$image" \
    --iidfile "$work/iid" \
    --build-arg "VERSION=${version:-dev}" \
    --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" \
    "$work/context"

id="$(cat "$work/iid")"
size="$(docker image inspect --format '{{.Size}}' "$id")"
digests="$(docker image inspect --format '{{join .RepoDigests " "}}' "$id")"
echo "image:   $image"
echo "id:      $id"
echo "digest:  ${digests:-none (a registry digest exists only once the image is pushed)}"
echo "size:    $size bytes"
echo "version: $sim_version, revision $revision"
echo "took:    $((SECONDS - started)) s"
