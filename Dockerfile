# DevDB's image: devdb-api, devdb-router, devdb (CLI) and devdb-fetch-dump, for charts/devdb.
# It is not built in this repository's CI (no container engine there); see docs/kubernetes.md.
#
#   docker build -t ghcr.io/devdb/devdb:0.1.0 .
#
# Build stage: Swift 6 on Debian 12 (bookworm), the same C libraries as a developer machine.
# The compiler DevDB is built and tested with (Swift 6.3.1); any Swift 6 on bookworm should do.
ARG SWIFT_IMAGE=swift:6.3-bookworm
FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev libhiredis-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The manifest names the test targets too, so SwiftPM wants their folders present.
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
# Every product (--product takes one at a time): devdb-api, devdb-router, devdb, devdb-fetch-dump.
RUN swift build -c release --static-swift-stdlib \
 && mkdir -p /out/bin \
 && cd "$(swift build -c release --show-bin-path)" \
 && cp devdb-api devdb-router devdb devdb-fetch-dump /out/bin/ \
 && cp -R ./*.resources /out/bin/ \
 && strip /out/bin/devdb-api /out/bin/devdb-router /out/bin/devdb /out/bin/devdb-fetch-dump

# Runtime: slim Debian 12 with the shared C libraries and the PostgreSQL 15 client tools
# (pg_restore, psql) the restore Job and operators use. Runs as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata libssl3 libhiredis0.14 libcurl4 libpq5 postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 devdb \
 && useradd --system --uid 10001 --gid devdb --home-dir /var/lib/devdb --create-home devdb
# The binaries and the bundle with the API's openapi.yaml (it must sit next to devdb-api).
COPY --from=build /out/bin/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/devdb
EXPOSE 5000 5432 9187
# The chart picks the program: devdb-api, devdb-router or devdb-fetch-dump.
CMD ["devdb-api", "--help"]
