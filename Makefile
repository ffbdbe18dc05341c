# Two commands do everything: `make run` and `make test`. Both create .venv and install
# requirements.txt first; the install is skipped while requirements.txt is unchanged.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-16)
PROMPT ?= a red circle above a blue square

.PHONY: setup browser run compare test tour kernel-paths lint screenshot bench train study clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# The app on http://127.0.0.1:7860 with the Shapes lab (PRESET=pretrained for Karlo + SD on a GPU).
PRESET ?= lab
run: setup
	$(PY) app.py --preset $(PRESET)

# One side-by-side comparison on the command line, no browser.
compare: setup
	HF_HUB_OFFLINE=1 $(PY) -m comparisons.compare "$(PROMPT)" --seed 0

# The browser test drives Debian's chromium (never a downloaded browser).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

test: setup browser lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests -q

# A newcomer's tour of every tab in one chromium session (tests/test_tour.py; `make test` runs it too).
tour: setup browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/test_tour.py -q

# The tests whose figures depend on the CPU's kernels, under each kernel path this machine can force (ATen's
# capability, oneDNN's and MKL's instruction sets alone and together): what CI's next CPU may run (~25 min).
KERNEL_TESTS := tests/comparisons/test_integrity.py tests/comparisons/test_regeneration.py tests/pipelines/test_parity.py
KERNEL_PATHS := ATEN_CPU_CAPABILITY=default ATEN_CPU_CAPABILITY=avx2 ATEN_CPU_CAPABILITY=avx512 \
	ONEDNN_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_ENABLE_INSTRUCTIONS=SSE4_2 \
	ATEN_CPU_CAPABILITY=default,ONEDNN_MAX_CPU_ISA=SSE41,MKL_ENABLE_INSTRUCTIONS=SSE4_2
kernel-paths: setup
	for path in $(KERNEL_PATHS); do \
		echo "== $$path"; env $$(echo $$path | tr , ' ') HF_HUB_OFFLINE=1 $(PY) -m pytest $(KERNEL_TESTS) -q || exit 1; \
	done

# ruff (pyproject.toml): lint and format, lines up to 119 characters
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rebuilds every Shapes lab model from scratch (about 2.3 h on a 2-core CPU; uses a GPU if present).
train: setup
	HF_HUB_OFFLINE=1 $(PY) -m lab.train all

# Tests the papers' claims in the lab and rewrites research/findings/ (14.4 min on a quiet 2-core CPU, 2026-12-07).
study: setup
	HF_HUB_OFFLINE=1 $(PY) -m research.study

# Refreshes docs/compare-tab.png (the README's screenshot) from the browser test.
screenshot: setup browser
	HF_HUB_OFFLINE=1 T2I_SAVE_DOCS_SCREENSHOT=1 $(PY) -m pytest tests/test_app.py -q -k browser_generates

bench: setup
	HF_HUB_OFFLINE=1 $(PY) -m comparisons.bench

clean:
	rm -rf $(VENV) .cache .pytest_cache
