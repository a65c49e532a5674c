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
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

build:
	$(CARGO) build --release --locked --workspace

bench:
	$(CARGO) run --release --locked -p osdeploy-cli --bin osdeploy-bench
