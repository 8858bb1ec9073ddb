# Two commands do all the set-up on a fresh machine (Python 3.11+, PyPI reachable):
#   make demo   - the whole pipeline locally on the embedded store
#   make test   - the test suite (real tansu broker, real chDB ClickHouse)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench reliability reliability-long install clean chromium

$(STAMP): pyproject.toml constraints.txt
	python3 -c 'import sys; sys.exit("tracejudge needs Python 3.11+") if sys.version_info < (3, 11) else None'
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tracejudge demo

# The suite runs in TEST_WORKERS processes (pytest-xdist), a whole test module per process: most of
# its time is integration tests waiting on timers (decision waits, session timeouts, restarts).
# Each process starts its own tansu broker and chDB engine. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP) chromium
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The dashboard's browser test drives Debian's chromium (never a downloaded browser build). As root
# it is installed when missing; otherwise that test is skipped with the reason.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the dashboard browser test will be skipped"; }

# The fault suite's figures table (README "Reliability"): the short versions of the scenarios (also
# part of `make test`), or the long ones (pytest marker `reliability`, ~1 hour).
reliability: $(STAMP)
	$(PY) -m tests.reliability.report

reliability-long: $(STAMP)
	$(PY) -m tests.reliability.report --long

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) tracejudge-data
