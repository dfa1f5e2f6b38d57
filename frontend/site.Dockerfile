# The front-end image: the static site and its nginx settings, nothing to run. Built by
# `make frontend-image` (frontend/build-image.sh) and pushed to its own ECR repository by the
# master pipeline; the push deploys it on the front-end host (EventBridge -> deploy Lambda -> SSM
# -> frontend/deploy/latchkey-frontend-deploy, which unpacks /site and /nginx.conf.template into
# a release folder that the host's nginx serves).
#
# FROM scratch rather than nginx: the host's own nginx serves the files, so the image is the
# bundle's carrier only, and nothing has to be pulled to build it (or to test the chain offline).
# It still gets what an image in ECR gets: a digest to deploy by, immutable tags, scan on push
# (nothing to find), lifecycle expiry, the same pull permissions and the same push event.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://example.invalid/latchkey

LABEL org.opencontainers.image.title="latchkey-frontend" \
      org.opencontainers.image.description="Latchkey's static front-end and its nginx settings (a bundle, not a runnable image)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}"

COPY public/ /site/
COPY nginx.conf /nginx.conf.template
