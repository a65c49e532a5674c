# The two commands the README starts with, and the checks CI runs.
.PHONY: demo test check unit bench bench-lambda lambda build

CARGO ?= cargo

# Server and a simulated fleet of 600 devices through three operations.
demo:
	$(CARGO) run --release --locked -p osdeploy-cli --bin osdeploy -- demo

# Every test, after formatting and lints.
test: check unit

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings
	test -x .venv/bin/cfn-lint || (python3 -m venv .venv && .venv/bin/pip install --quiet --disable-pip-version-check "cfn-lint==1.58.0")
	.venv/bin/cfn-lint infra/template.yaml

# The AWS adapter tests run against moto's server, which this target installs
# into .venv, starts on 127.0.0.1 and stops again, whatever the tests did.
unit:
	scripts/moto.sh start
	status=0; \
	OSDEPLOY_TEST_AWS_ENDPOINT="http://127.0.0.1:$$(cat .moto.port)" AWS_EC2_METADATA_DISABLED=true \
		$(CARGO) test --workspace --all-features --locked --no-fail-fast || status=$$?; \
	scripts/moto.sh stop; \
	exit $$status

build:
	$(CARGO) build --release --locked --workspace

bench:
	$(CARGO) run --release --locked -p osdeploy-cli --bin osdeploy-bench

# The Lambda functions, cross-built by cargo-lambda (from PyPI, with zig)
# with the size-tuned `lambda` profile of Cargo.toml. arm64 needs the
# aarch64-unknown-linux-gnu standard library; without it, build for x86_64
# and deploy with the template's Architecture=x86_64.
LAMBDA_ARCH ?= --x86-64
LAMBDA_PROFILE ?= lambda
# cargo-lambda writes each function to <target dir>/lambda/<function>/bootstrap.
LAMBDA_OUT = $${CARGO_TARGET_DIR:-target}/lambda
lambda:
	test -x .venv/bin/cargo-lambda || (python3 -m venv .venv && .venv/bin/pip install --quiet --disable-pip-version-check cargo-lambda ziglang)
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(CARGO) lambda build --profile $(LAMBDA_PROFILE) --locked $(LAMBDA_ARCH) -p osdeploy-functions

# Binary sizes and time from process start to first handled request of
# the mdm-connect function, against moto on 127.0.0.1.
bench-lambda: lambda
	scripts/moto.sh start
	status=0; \
	ls -l $(LAMBDA_OUT)/*/bootstrap; \
	.venv/bin/python scripts/lambda_cold_start.py $(LAMBDA_OUT)/mdm-connect/bootstrap "http://127.0.0.1:$$(cat .moto.port)" 20 || status=$$?; \
	scripts/moto.sh stop; \
	exit $$status
