#!/usr/bin/env bash
# Builds fleetbench's FROM-scratch images, each from fully static binaries:
#
#   image (tag override)                                       binaries         Dockerfile
#   fleetbench/vllm-sim:dev   ($FLEETBENCH_SIM_IMAGE)          vllm-sim         vllm-sim.Dockerfile
#   fleetbench/controller:dev ($FLEETBENCH_CONTROLLER_IMAGE)   controller       controller.Dockerfile
#   fleetbench/agent:dev      ($FLEETBENCH_AGENT_IMAGE)        agent, vllm-sim  agent.Dockerfile
#
# (the agent image carries vllm-sim for the `process` runtime: deploy/compose runs it so).
#
#  1. `cargo build --release --target <host triple>` of the binaries the chosen images need
#     (each on its own, so no binary gets another's dependency features), linked against glibc's
#     static libraries (-C target-feature=+crt-static; no musl target needed) into
#     target/<host-triple>/release/; each is checked static with `file` and `ldd` and run
#     once (--version);
#  2. per image, `docker build` with a context that holds only its binaries (stripped) and,
#     for the controller and the agent, the empty directory their data volume mounts on
#     (/var/lib/fleetbench, /var/lib/fleetbench-agent; mode 1777, like /tmp, because the
#     compose fleet runs the containers as the invoking user's uid, which no image can know;
#     what the programs create inside is owner-only). Nothing of the repository or of
#     target/ is sent.
#
# Needs cargo, rustc, glibc's static libraries (libc.a: Debian/Ubuntu libc6-dev), file,
# ldd and a Docker engine; pulls nothing (FROM scratch), so it works with an engine that
# cannot reach a registry. Usage:
#
#   deploy/docker/build-images.sh                       # all three images
#   deploy/docker/build-images.sh controller agent      # some of: vllm-sim controller agent
#   FLEETBENCH_AGENT_IMAGE=registry.example/fleetbench-agent:1 deploy/docker/build-images.sh agent
#
# Each image ends with a block on stdout: image, id, digest, size, version, took.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

# The name these messages carry: build-sim-image.sh runs this script for the sim image.
me="${FLEETBENCH_BUILD_SCRIPT_NAME:-build-images}"
die() {
    echo "$me: $*" >&2
    exit 1
}

# Which images, in the order given (default all three).
images=("$@")
if [[ ${#images[@]} -eq 0 ]]; then
    images=(vllm-sim controller agent)
fi
for name in "${images[@]}"; do
    case "$name" in
    vllm-sim | controller | agent) ;;
    *) die "unknown image \"$name\" (choose from: vllm-sim controller agent)" ;;
    esac
done

tag_of() {
    case "$1" in
    vllm-sim) echo "${FLEETBENCH_SIM_IMAGE:-fleetbench/vllm-sim:dev}" ;;
    controller) echo "${FLEETBENCH_CONTROLLER_IMAGE:-fleetbench/controller:dev}" ;;
    agent) echo "${FLEETBENCH_AGENT_IMAGE:-fleetbench/agent:dev}" ;;
    esac
}
# The binaries in each image.
bins_of() {
    case "$1" in
    vllm-sim) echo "vllm-sim" ;;
    controller) echo "controller" ;;
    agent) echo "agent vllm-sim" ;;
    esac
}
# The empty directory the image's data volume mounts on, if any.
data_dir_of() {
    case "$1" in
    controller) echo "var/lib/fleetbench" ;;
    agent) echo "var/lib/fleetbench-agent" ;;
    *) echo "" ;;
    esac
}
# The cargo package of each binary.
package_of() {
    case "$1" in
    vllm-sim) echo "fleetbench-sim" ;;
    controller) echo "fleetbench-controller" ;;
    agent) echo "fleetbench-agent" ;;
    esac
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

# Every binary the chosen images need, once each, each in a cargo build of its own: built
# together, cargo unifies their dependencies' features. vllm-sim would grow by a quarter,
# and the agent would get the controller's S3 client features (reqwest with rustls and the
# platform verifier), with which its HTTP client cannot even be built in a FROM-scratch
# container (no CA store): "HTTP client: builder error".
bins=()
for name in "${images[@]}"; do
    for bin in $(bins_of "$name"); do
        [[ " ${bins[*]} " == *" $bin "* ]] || bins+=("$bin")
    done
done

started=$SECONDS
for bin in "${bins[@]}"; do
    cargo_args=(-p "$(package_of "$bin")" --bin "$bin")
    echo "$me: cargo build --release ${cargo_args[*]} --target $triple (crt-static)" >&2
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release "${cargo_args[@]}" --target "$triple"
done
release="${CARGO_TARGET_DIR:-$root/target}/$triple/release"

# Statically linked, or the images (which have no libc, no loader) cannot start them.
declare -A version_of
for bin in "${bins[@]}"; do
    path="$release/$bin"
    [[ -x "$path" ]] || die "$path was not built"
    kind="$(file -b "$path")"
    case "$kind" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$path is not statically linked: $kind" ;;
    esac
    deps="$(ldd "$path" 2>&1 || true)"
    case "$deps" in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) die "$path needs shared libraries: $deps" ;;
    esac
    version_of[$bin]="$("$path" --version)" || die "$path --version failed"
    echo "$me: $path: ${kind%%,*}, static; ${version_of[$bin]}" >&2
done

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

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for name in "${images[@]}"; do
    image="$(tag_of "$name")"
    # The build context: the image's binaries and its empty data directory, nothing else
    # (the Dockerfile is passed with -f).
    context="$work/$name"
    mkdir "$context"
    versions=()
    for bin in $(bins_of "$name"); do
        cp "$release/$bin" "$context/$bin"
        if command -v strip >/dev/null; then
            strip --strip-all "$context/$bin"
        fi
        versions+=("${version_of[$bin]}")
    done
    data="$(data_dir_of "$name")"
    if [[ -n "$data" ]]; then
        mkdir -p "$context/rootfs/$data"
        # Parents as in any root file system; the data directory writable by whichever
        # uid the container runs as (sticky, like /tmp).
        find "$context/rootfs" -type d -exec chmod 0755 {} +
        chmod 1777 "$context/rootfs/$data"
    fi
    echo "$me: docker build -t $image (context: $(cd "$context" && find . -mindepth 1 -maxdepth 1 -printf '%f ' | sed 's/ $//'))" >&2
    docker build \
        --file "$here/$name.Dockerfile" \
        --tag "$image" \
        --iidfile "$work/$name.iid" \
        --build-arg "VERSION=${version:-dev}" \
        --build-arg "REVISION=$revision" \
        --build-arg "CREATED=$created" \
        "$context"

    id="$(cat "$work/$name.iid")"
    size="$(docker image inspect --format '{{.Size}}' "$id")"
    digests="$(docker image inspect --format '{{join .RepoDigests " "}}' "$id")"
    joined="$(printf '%s, ' "${versions[@]}")"
    echo "image:   $image"
    echo "id:      $id"
    echo "digest:  ${digests:-none (a registry digest exists only once the image is pushed)}"
    echo "size:    $size bytes"
    echo "version: ${joined%, }, revision $revision"
    echo "took:    $((SECONDS - started)) s"
done
