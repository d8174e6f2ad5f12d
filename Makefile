# Every target sets up what it needs: a fresh clone runs `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS := dev,etcd,nats,redis,rabbitmq,otel,prometheus,auth,gateway
WKT = $$($(BIN)/python -c 'import grpc_tools, os; print(os.path.dirname(grpc_tools.__file__))')/_proto

# The oldest and newest Python that requires-python admits: test-pythons runs the
# runtime, codegen, CLI, registry and testing-kit tests on each, from its own .venv-X.Y.
PYTHONS := 3.10 3.13
VERSION_TESTS := tests/runtime tests/codegen tests/cli tests/registry tests/etcd_registry \
    tests/nats_registry tests/dns tests/testing

.PHONY: venv backends gen golden lint test test-pythons demo bench clean

venv: $(STAMP)

# $(call setup,VENV,PYTHON): the project with every extra in VENV, made by PYTHON if
# missing. A failed set-up removes VENV, so only a complete one gets its stamp.
setup = $(2) -c '' || { echo "cannot run $(2): install that Python first"; exit 1; }; \
    { test -x $(1)/bin/python || $(2) -m venv $(1); } && \
    $(1)/bin/python -m pip install -q --upgrade pip && \
    $(1)/bin/python -m pip install -q -e '.[$(EXTRAS)]' || { rm -rf $(1); exit 1; }

$(STAMP): pyproject.toml
	$(call setup,$(VENV),$(PY))
	touch $@

# Python X.Y: pyenv's if it has one (its pythonX.Y shim runs only the selected
# versions), else pythonX.Y on PATH.
python = $(lastword python$(1) $(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python$(1)))

.venv-%/.installed-stamp: pyproject.toml
	$(call setup,.venv-$*,$(call python,$*))
	touch $@

# micro/options_pb2 and micro/delivery_* are committed (the runtime imports them);
# examples/gen is not, nor tests/gen (runtime_support generates the tests' echo.proto).
gen: venv
	$(BIN)/python -m grpc_tools.protoc -Iproto -I$(WKT) --python_out=. \
	    --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=. proto/micro/options.proto
	$(BIN)/micro gen -I proto --out . proto/micro/delivery.proto
	$(BIN)/micro gen -I proto --out examples/gen proto/greeter
	$(BIN)/python tests/support/runtime_support.py
	$(BIN)/python tests/support/interop_support.py
	$(BIN)/python tests/support/gateway_support.py

# After an intended change to the generated code: rewrite tests/golden, then review the diff.
golden: venv
	PYTHONPATH=tests/support $(BIN)/python tests/golden/update.py

lint: gen
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy micro protoc_gen_micro tests bench
	cd examples/gen && ../../$(BIN)/mypy --strict --explicit-package-bases greeter
	MYPYPATH=examples/gen $(BIN)/mypy --strict examples/demo.py examples/greeter_service.py

# Debian packages the backend tests run against: dnsmasq (DNS discovery), redis-server
# and prometheus (tests start their own; the package's own service is not started where
# policy-rc.d forbids it, as in containers), and a RabbitMQ broker on 127.0.0.1:5672
# (tests share it); chromium, headless, for the gateway's /docs page. etcd and nats-server
# come from PyPI with the dev extra.
apt = { apt-get update -qq || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; }
backends:
	@command -v dnsmasq >/dev/null || test -x /usr/sbin/dnsmasq || $(call apt,dnsmasq-base) || \
	    echo "could not install dnsmasq-base: the DNS registry tests will not run"
	@command -v redis-server >/dev/null || $(call apt,redis-server) || \
	    echo "could not install redis-server: the Redis broker tests will not run"
	@command -v chromium >/dev/null || $(call apt,chromium) || \
	    echo "could not install chromium: the gateway's /docs browser test will not run"
	@command -v prometheus >/dev/null || $(call apt,--no-install-recommends prometheus) || \
	    echo "could not install prometheus: the Prometheus metrics test will not run"
	@$(PY) .ci/wait_port.py 5672 || \
	    { test -x /usr/sbin/rabbitmq-server || $(call apt,rabbitmq-server); \
	      service rabbitmq-server start >/dev/null 2>&1 || /usr/sbin/rabbitmq-server -detached; \
	      $(PY) .ci/wait_port.py 5672 60; } || \
	    echo "could not start RabbitMQ on 127.0.0.1:5672: the RabbitMQ broker tests will not run"

test: lint backends
	$(BIN)/pytest -q

test-pythons: backends $(PYTHONS:%=.venv-%/.installed-stamp)
	set -e; for v in $(PYTHONS); do echo "Python $$v:"; .venv-$$v/bin/pytest -q $(VERSION_TESTS); done

demo: gen
	$(BIN)/python examples/demo.py

bench: gen
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(PYTHONS:%=.venv-%) examples/gen tests/gen .mypy_cache .ruff_cache .pytest_cache
