# The two entry points a new user needs; both install what they need first.
VENV ?= .venv
export VENV

.PHONY: serve test install test-services

install:
	@deploy/install-python-env.sh

# Servers the tests start themselves (PostgreSQL); installed from Debian's packages if missing.
test-services:
	@deploy/install-test-services.sh

# Imports the demo base model (SmolLM2-135M-Instruct) once, then runs gateway + vLLM worker.
serve: install
	$(VENV)/bin/peftserve base import --demo --if-missing
	$(VENV)/bin/peftserve serve

test: install test-services
	$(VENV)/bin/python -m pytest -q -rs $(PYTEST_ARGS)
