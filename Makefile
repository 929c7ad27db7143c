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

# The API-level tests run a second time with every gateway's registry on PostgreSQL.
POSTGRES_API_TESTS ?= tests/test_serving.py tests/test_uploads.py tests/test_adapter_validation.py \
	tests/test_fine_tuning_api.py tests/test_migration.py tests/test_live_check_crash.py \
	tests/test_fine_tuning_resume.py tests/test_upload_crash.py

test: install test-services
	$(VENV)/bin/python -m pytest -q -rs $(PYTEST_ARGS)
	PEFTSERVE_TEST_DATABASE=postgresql $(VENV)/bin/python -m pytest -q -rs $(POSTGRES_API_TESTS)
