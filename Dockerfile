# Builds both binaries (api, worker) into one small runtime image that runs as a non-root
# user. Pick the process with the command: `api serve`, `worker run`, `api bootstrap`, ...
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins -p api -p worker \
    && cp target/release/api target/release/worker /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --create-home app
COPY --from=build /usr/local/bin/api /usr/local/bin/worker /usr/local/bin/
USER 10001:10001
WORKDIR /app
# Outside development the code encryption key must be given.
ENV DEV_MODE=false \
    LOG_FORMAT=json \
    API_ADDR=0.0.0.0:8080 \
    WORKER_ADDR=0.0.0.0:8081 \
    MAIL_DIR=/app/mail
EXPOSE 8080 8081
CMD ["api", "serve"]
