# syntax=docker/dockerfile:1
#
# The nocobase-mail-operator image: a release build on Debian 12 (glibc), copied into
# distroless cc-debian12 as the "nonroot" user (65532). No shell, no package manager;
# glibc, libgcc and the CA roots in /etc/ssl/certs (rustls-platform-verifier reads them)
# are all the binary needs. aws-lc-rs (rustls' crypto) is compiled with the image's gcc.
#
#   docker build -t ghcr.io/nocobase-mail-operator/nocobase-mail-operator:0.1.0 .

ARG RUST_VERSION=1

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# declared in Cargo.toml, so cargo wants it present even when building only the binary
COPY benches ./benches
# The registry and target caches survive between builds (BuildKit); the binary is copied
# out of the cache mount so that the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin nocobase-mail-operator \
    && install -D -m 0755 target/release/nocobase-mail-operator /out/nocobase-mail-operator \
    && strip /out/nocobase-mail-operator \
    && /out/nocobase-mail-operator --version

FROM gcr.io/distroless/cc-debian12:nonroot
# The operator version (Cargo.toml `version`; tests/chart.rs checks they agree).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="nocobase-mail-operator" \
      org.opencontainers.image.description="Kubernetes operator that validates the Microsoft Entra client secret of NocoBase's email manager, warns before it expires and injects only accepted credentials into NocoBase" \
      org.opencontainers.image.source="https://github.com/nocobase-mail-operator/nocobase-mail-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/nocobase-mail-operator /nocobase-mail-operator
USER 65532:65532
# /metrics, /healthz and /readyz (run --listen).
EXPOSE 8080
ENTRYPOINT ["/nocobase-mail-operator"]
CMD ["run"]
