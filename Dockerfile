# Build the release binary, then copy it into a small runtime image.
# The builder is pinned to bookworm so the binary's glibc matches the runtime image.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the `load` bench, so its source must be present to build.
COPY benches ./benches
RUN cargo build --release --locked --bin signin-wizard

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wizard
COPY --from=build /src/target/release/signin-wizard /usr/local/bin/signin-wizard
USER wizard
ENV WIZARD_BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["signin-wizard"]
CMD ["serve"]
