# A broken release for scripts/test-deploy.sh (see never_ready.c): same shape as the real image,
# FROM scratch around one static binary, so nothing has to be pulled.
FROM scratch
ARG VERSION=broken
# "serve" answers 503 forever; "exit-now" crashes at start (see never_ready.c).
ARG MODE=serve
ENV NEVER_READY_MODE=${MODE}
LABEL org.opencontainers.image.title="latchkey-api-never-ready" \
      org.opencontainers.image.version="${VERSION}"
COPY never-ready /never-ready
USER 10001:10001
ENTRYPOINT ["/never-ready"]
