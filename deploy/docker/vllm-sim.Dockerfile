# vllm-sim, the vLLM stand-in, as a FROM-scratch image: one fully static binary, nothing else.
#
# Build it with deploy/docker/build-sim-image.sh, which compiles the static binary and sends a
# build context holding only that binary (this file expects `vllm-sim` at the context root).
# Works with the legacy builder and with BuildKit; pulls nothing.
#
#   docker run --rm -p 8000:8000 fleetbench/vllm-sim:dev --model m --served-model-name m
#
# The simulator binds 0.0.0.0:8000 by default (VLLM_SIM_HOST / VLLM_SIM_PORT or --host /
# --port), handles SIGTERM itself as PID 1 (vLLM's shutdown sequence, exit 0) and reads or
# writes no file unless --sim-tokenizer-json asks it to.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="vllm-sim" \
      org.opencontainers.image.description="fleetbench vllm-sim: a vLLM 0.32 stand-in (vLLM's CLI, OpenAI-compatible HTTP API and metrics, with a continuous-batching timing model)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="fleetbench" \
      org.opencontainers.image.source="https://example.invalid/fleetbench"

COPY vllm-sim /vllm-sim

# nobody:nogroup by number (scratch has no /etc/passwd); the port is above 1024.
USER 65534:65534
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/vllm-sim"]
