# The two commands the README starts with, and the checks CI runs.
.PHONY: demo test check unit bench build

CARGO ?= cargo

# Server and a simulated fleet of 600 devices through three operations.
demo:
	$(CARGO) run --release --locked -p osdeploy-cli -- demo

# Every test, after formatting and lints.
test: check unit

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

# The AWS adapter tests run against moto's server, which this target installs
# into .venv, starts on 127.0.0.1 and stops again, whatever the tests did.
unit:
	scripts/moto.sh start
	status=0; \
	OSDEPLOY_TEST_AWS_ENDPOINT="http://127.0.0.1:$$(cat .moto.port)" AWS_EC2_METADATA_DISABLED=true \
		$(CARGO) test --workspace --all-features --locked || status=$$?; \
	scripts/moto.sh stop; \
	exit $$status

build:
	$(CARGO) build --release --locked --workspace

bench:
	$(CARGO) run --release --locked -p osdeploy-cli --bin osdeploy-bench
