# Two commands on a fresh machine: `make demo` (train sketch-rnn on the synthetic set) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BACKENDS ?= tensorflow jax torch
# Two workers, a test file each at a time (a file's module fixtures are built once).
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: install test demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# One pytest process per Keras backend; fails if any backend fails.
test: install
	@status=0; for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b ==="; \
	  KERAS_BACKEND=$$b $(PY) -m pytest $(PYTEST_ARGS) || status=1; \
	done; exit $$status

demo: install
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(VENV)/bin/sketch-rnn train --data synthetic --preset demo --out runs/demo

bench: install
	for b in $(BACKENDS); do KERAS_BACKEND=$$b $(PY) benchmarks/overhead.py; done

clean:
	rm -rf $(VENV) runs .pytest_cache
