# The fleetbench agent as a FROM-scratch image: the static agent, the static vllm-sim its
# `process` runtime starts (agent config: vllm_command = ["/vllm-sim", "serve"]), and the
# empty directory its spool volume mounts on, nothing else.
#
# Build it with deploy/docker/build-images.sh, which compiles the static binaries and sends a
# build context holding only `agent`, `vllm-sim` and `rootfs/var/lib/fleetbench-agent/`
# (mode 1777: the container may run as any uid; the spool the agent creates inside is
# owner-only, 0700/0600). Works with the legacy builder and with BuildKit; pulls nothing.
#
# The agent reads /etc/fleetbench/agent.toml (mount it read-only; FLEETBENCH_AGENT_CONFIG
# or --config to change) and spools results under /var/lib/fleetbench-agent (its default
# state directory here, through STATE_DIRECTORY; a config's spool_dir overrides it): mount a
# volume there, or results not yet acknowledged by the controller die with the container.
#
#   docker run -v spool-gpu-1:/var/lib/fleetbench-agent \
#       -v "$PWD/agent.toml:/etc/fleetbench/agent.toml:ro" -v "$PWD/tls:/etc/fleetbench/tls:ro" \
#       fleetbench/agent:dev
#
# deploy/compose/ runs three of them. Real engines (vLLM) are not in the image: for those,
# build on an image that has them, or use the docker runtime with the host's Docker socket
# (deploy/kubernetes/ says what that grants). It stops on SIGTERM (stopping its engine's
# process group); run it with an init (`docker run --init`, compose `init: true`) so engine
# processes that outlive their parent are reaped.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="fleetbench-agent" \
      org.opencontainers.image.description="fleetbench agent: runs benchmark points (engine lifecycle, load generation, results spool); with vllm-sim for the process runtime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="fleetbench" \
      org.opencontainers.image.source="https://example.invalid/fleetbench"

COPY rootfs/ /
COPY agent vllm-sim /

# The agent's default config file and state directory (its spool: <state dir>/spool/<name>).
ENV FLEETBENCH_AGENT_CONFIG=/etc/fleetbench/agent.toml \
    STATE_DIRECTORY=/var/lib/fleetbench-agent

# nobody:nogroup by number (scratch has no /etc/passwd).
USER 65534:65534
STOPSIGNAL SIGTERM
ENTRYPOINT ["/agent"]
