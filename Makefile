PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Tests run in parallel (pytest-xdist); most of their time is spent waiting on real qclusters.
TEST_WORKERS ?= 4
VENV := .venv
# Where gunicorn listens (config/gunicorn.py reads the same variable).
BIND ?= 127.0.0.1:8000
export BIND
BIN := $(VENV)/bin

.PHONY: run test lint install

## make run: the whole platform (web, admin, webhook, every queue) on SQLite, under supervisord.
run: install .env
	@mkdir -p var/log
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	@echo ""
	@echo "  Admin:    http://$(BIND)/admin/"
	@$(BIN)/python manage.py webhook_urls --base http://$(BIND) | sed 's/^/  /'
	@echo "  First staff user (in another terminal):  $(BIN)/python manage.py createsuperuser"
	@echo "  Logs:     var/log/   (Ctrl-C stops everything)"
	@echo ""
	$(BIN)/supervisord -c supervisor/local.conf

## make test: the app layers (import-linter, see pyproject.toml), then every test, on SQLite + ORM broker, or PostgreSQL + Redis when DATABASE_URL/REDIS_URL are set.
test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo

install: $(BIN)/.installed

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

.env:
	sed "s/^SECRET_KEY=.*/SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))')/" .env.example > .env
