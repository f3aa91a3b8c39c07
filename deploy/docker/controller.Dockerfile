# The fleetbench controller as a FROM-scratch image: one fully static binary and the empty
# directory its data volume mounts on, nothing else.
#
# Build it with deploy/docker/build-images.sh, which compiles the static binary and sends a
# build context holding only `controller` and `rootfs/var/lib/fleetbench/` (mode 1777: the
# container may run as any uid; what the controller creates inside is owner-only). Works
# with the legacy builder and with BuildKit; pulls nothing.
#
# Defaults: results in /var/lib/fleetbench/results, the state store next to them in
# /var/lib/fleetbench/controller-state: mount a volume on /var/lib/fleetbench (and, if the
# results should land on the host, a bind mount on /var/lib/fleetbench/results). The
# listener is 127.0.0.1:50051 unless --listen says otherwise, and any other address needs
# TLS and credentials (README: Securing a fleet), e.g.
#
#   docker run -v fleetbench-data:/var/lib/fleetbench -v "$PWD/certs:/etc/fleetbench/tls:ro" \
#       -p 127.0.0.1:50051:50051 fleetbench/controller:dev --listen 0.0.0.0:50051 \
#       --tls-cert /etc/fleetbench/tls/controller.pem --tls-key /etc/fleetbench/tls/controller-key.pem \
#       --client-ca /etc/fleetbench/tls/ca.pem --tokens /etc/fleetbench/tls/tokens.toml
#
# deploy/compose/ runs it that way. It stops on SIGTERM (draining, as PID 1) and needs no
# capability, no writable root file system and no file outside its data directory but the
# TLS files it is given.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="fleetbench-controller" \
      org.opencontainers.image.description="fleetbench controller: receives sweeps, drives agents over gRPC, writes the Parquet results" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="fleetbench" \
      org.opencontainers.image.source="https://example.invalid/fleetbench"

COPY rootfs/ /
COPY controller /controller

# The controller's flags read these when not given.
ENV FLEETBENCH_RESULTS=/var/lib/fleetbench/results \
    FLEETBENCH_STATE_DIR=/var/lib/fleetbench/controller-state

# nobody:nogroup by number (scratch has no /etc/passwd); the port is above 1024.
USER 65534:65534
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["/controller"]
