# lmpipe: `make demo` runs the Penn Treebank pipeline end to end; `make test` runs ruff and pytest.
# Both install what they need first (a .venv, KenLM's lmplz for the tests); reruns are quick.

VENV          ?= .venv
PYTHON        ?= python3
TORCH_VERSION ?= 2.13.0
PY            := $(VENV)/bin/python
STAMP         := $(VENV)/.lmpipe-installed
LMPIPE_CACHE  ?= $(HOME)/.cache/lmpipe
export LMPIPE_CACHE
# Debian packages KenLM's lmplz/build_binary need to build (tests compare against lmplz), and chromium,
# the headless browser tests/test_report_html.py screenshots report.html with.
SYSTEM_PACKAGES := cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev \
                   libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev chromium

.PHONY: install demo test lint sysdeps kenlm clean bench

install: $(STAMP)

# torch is pinned here (a CPU build is on disk); pyproject keeps torch>=2.4 so GPU users bring their own.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Installs the Debian build dependencies of lmplz when some are missing (needs root or sudo).
sysdeps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

kenlm: sysdeps install
	bash .ci/build_kenlm.sh

demo: install kenlm
	$(VENV)/bin/lmpipe data fetch ptb
	$(VENV)/bin/lmpipe data fetch embedding-eval
	$(VENV)/bin/lmpipe run pipelines/specs/ptb.yaml --run-dir runs/ptb
	$(VENV)/bin/lmpipe eval runs/ptb --split test
	cat runs/ptb/report/report.md

lint: install
	$(VENV)/bin/ruff check .

test: install kenlm lint
	$(VENV)/bin/pytest -q

bench: install kenlm
	$(PY) bench/tokenize_speed.py

clean:
	rm -rf runs build *.egg-info .pytest_cache
