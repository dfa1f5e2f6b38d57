# The two commands a newcomer needs: `make run` and `make test`. The scripts do the work.
.PHONY: run test lint fmt build clean-data openapi

run:
	scripts/run.sh

test:
	scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	shellcheck scripts/*.sh .ci/run

fmt:
	cargo fmt --all

build:
	cargo build --workspace --release --locked

# Stops nothing: run it after `make run` has exited. Deletes the local database.
clean-data:
	rm -rf .data

# Rewrites the checked-in OpenAPI document from the code (a test fails while they differ).
openapi:
	UPDATE_OPENAPI=1 cargo test -p auth-core --lib openapi::tests::the_checked_in_document_matches_the_code

# The front-end in headless Chromium through nginx (frontend/nginx.conf), api-container and a
# throwaway PostgreSQL; screenshots land in artifacts/e2e/. Extra pytest arguments: ARGS='-k keyboard'.
.PHONY: test-e2e
test-e2e:
	scripts/test-e2e.sh $(ARGS)

# The api-container image: FROM scratch around the static musl binary (IMAGE=name:tag, default
# latchkey-api:dev). Needs a Docker engine; installs the musl target and musl-gcc when missing.
.PHONY: image test-deploy
image:
	api-container/build-image.sh

# The front-end image: FROM scratch, the site (frontend/public, plus version.txt) and its nginx
# settings, for the front-end host's latchkey-frontend-deploy (IMAGE=name:tag, default
# latchkey-frontend:dev; VERSION, default `git describe`). Needs a Docker engine, nothing else.
.PHONY: frontend-image
frontend-image:
	frontend/build-image.sh

# The image and the host deploy script (api-container/deploy/) against the real Docker engine,
# a local registry, nginx and PostgreSQL, all started and removed by the test.
test-deploy:
	scripts/test-deploy.sh

# The deploy chain as one chain (tests/chain/): the image pushed to a local registry and moto's
# ECR, the push event from its real digest, the deploy Lambda (cargo lambda) against moto's ECR and
# SSM, the SSM document's own script on two local back-end hosts behind frontend/nginx.conf, under
# load: a swap without a failed request, then a release that never gets ready rolled back on the
# first host and the roll stopped there. Then the front-end's route: a front-end image through the
# same chain to a local front-end host (the site swapped under load; a page-less image refused,
# the old site serving). Needs Docker, and root or passwordless sudo -n (a GitHub runner) for the
# hosts' scripts; installs what it lacks. ARGS to pytest.
.PHONY: test-chain
test-chain:
	scripts/test-chain.sh $(ARGS)

# The GitHub Actions workflows, offline: GitHub's workflow schema (check-jsonschema), the
# pipeline's shape (pytest, tests/workflows/) and zizmor --offline (nothing above low).
# Installs its pinned Python tools when missing.
.PHONY: test-workflows
test-workflows:
	scripts/test-workflows.sh

# The serverless half, offline: cfn-lint, sam validate --lint, sam build (both bootstraps for
# arm64 with cargo-lambda + zig, no Docker), then both Lambdas through the Lambda runtime API
# (cargo lambda watch + invoke) against PostgreSQL and moto. Installs its pinned tools when missing.
.PHONY: test-lambda
test-lambda:
	scripts/test-lambda.sh

# The kdf crate's tests on aarch64 (the Lambda's ARMv8 SHA-2 path), under qemu-user on x86_64;
# installs qemu-user and the aarch64 cross linker when missing.
.PHONY: test-kdf-arm
test-kdf-arm:
	scripts/test-kdf-arm.sh

# `sam local invoke` and `sam local start-api`, offline (docs/deploy.md, "Build, deploy, run"):
# sam-local builds both Lambdas as static musl bootstraps for this machine, the local template
# (.aws-sam/local/template.yaml) and the FROM-scratch base image SAM builds its emulator on;
# test-sam-local also installs the pinned SAM CLI and tests every local command against
# PostgreSQL and moto (tests/sam_local). Both need a Docker engine.
.PHONY: sam-local test-sam-local
sam-local:
	scripts/sam-local.sh

test-sam-local:
	scripts/test-sam-local.sh

# Issue 8's numbers: hashing against the machine's bound, wrk against a release build on a private
# PostgreSQL (throughput, p50/p99, isolation, growth to a million users), RSS and start-up.
# Writes bench/RESULTS.md, bench/results.json and bench/results.png (under 10 minutes).
.PHONY: bench
bench:
	bench/run.sh

# The AWS environment, offline: cfn-lint and sam validate --lint on every template, checkov on
# infra/ (skips only with their reasons in the template), the environment stack created on moto's
# server and read back with boto3, and the hosts' bootstrap (infra/host/bootstrap.sh, install.sh)
# run on stand-in hosts of each supported distribution (tests/infra). About a minute once its
# pinned tools (scripts/requirements/) are installed.
.PHONY: test-infra
test-infra:
	scripts/test-infra.sh

# Everything on AWS, from an empty account (docs/deploy.md): the environment stack, the host
# bundle, then the SAM stack with the environment's outputs. Idempotent. Needs AWS credentials,
# AWS_REGION and GITHUB_REPO=owner/name.
.PHONY: deploy-aws
deploy-aws:
	scripts/deploy-aws.sh
