# chatsite: `make serve` runs the app, `make test` runs the whole suite (SQLite leg, then
# PostgreSQL + Redis leg). Both create the virtualenv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
CHROMIUM ?= /usr/bin/chromium
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: serve test test-sqlite test-postgres lint check format browser screenshots bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

# A development server: debug mode unless DJANGO_DEBUG says otherwise.
serve: export DJANGO_DEBUG ?= 1
serve: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) chatsite.asgi:application

# Browser tests drive Debian's Chromium (Playwright cannot download its own here).
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; \
	  else echo "Chromium is missing: install Debian's 'chromium' package" >&2; exit 1; fi; }

test: test-sqlite test-postgres

test-sqlite: $(VENV)/.installed browser
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: $(VENV)/.installed browser
	DATABASE_URL=$(POSTGRES_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest $(PYTEST_ARGS)

# Types: mypy with django-stubs over the app (strict for gateway/ and realtime/); it reads the
# development settings.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DJANGO_DEBUG=1 $(VENV)/bin/mypy

# Django's own checks: no model change without its migration, and production settings that
# pass `check --deploy` (a throwaway secret key; nothing is served).
check: $(VENV)/.installed
	DJANGO_DEBUG=1 $(PY) manage.py makemigrations --check --dry-run
	env -u DJANGO_DEBUG DJANGO_SECRET_KEY="$$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  DJANGO_ALLOWED_HOSTS=chat.example.com $(PY) manage.py check --deploy --fail-level WARNING

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Screenshots of the chat page (light/dark, desktop/phone) from a real Daphne run, for the README.
screenshots: $(VENV)/.installed browser
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -q tests/screenshots.py

clean:
	rm -rf $(VENV) staticfiles test-artifacts .pytest_cache

# The benchmark (bench/REPORT.md): BENCH_ARGS='--db postgres --name NAME' to change the run.
#   make bench BENCH_ARGS='--db postgres --scenario burst'        N at once, beside direct reads
#   make bench BENCH_ARGS='--db postgres --scenario burst --burst 100 --layer redis --servers 2'
#   make bench BEFORE=060c630 BENCH_ARGS='--db postgres --scenario burst --name before'
#   make bench BENCH=render                                      Markdown CPU per flush
# BEFORE=<commit> runs the same harness against that commit's app, exported to BENCH_BEFORE_DIR.
BENCH_ARGS ?= --db postgres
BENCH ?= run
BEFORE ?=
BENCH_BEFORE_DIR ?= /tmp/chatsite-bench-before
bench: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -r bench/requirements.txt
ifneq ($(BEFORE),)
	rm -rf $(BENCH_BEFORE_DIR) && mkdir -p $(BENCH_BEFORE_DIR)
	git archive $(BEFORE) | tar -x -C $(BENCH_BEFORE_DIR)
	echo $(BEFORE) > $(BENCH_BEFORE_DIR)/.bench-commit
	env -u REDIS_URL $(PY) -m bench.$(BENCH) $(BENCH_ARGS) --app-dir $(BENCH_BEFORE_DIR)
else
	env -u REDIS_URL $(PY) -m bench.$(BENCH) $(BENCH_ARGS)
endif
