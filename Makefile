# Two commands: `make demo` and `make test`. Both create .venv when it is missing.
# TORCH picks the torch requirement installed first (the CPU build 2.13.0 by default;
# e.g. `make TORCH='torch>=2.2' test` for another one).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow mutate lint format bench bench-samplers bench-objectives bench-likelihood bench-digits bench-fashion bench-interop bench-guidance bench-vae bench-processes bench-posterior clean

$(BIN)/scorelab: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,diffusers]"
	touch $(BIN)/scorelab

demo: $(BIN)/scorelab
	$(BIN)/scorelab demo --out runs/demo

# the default tier: every test not marked slow (about 2 minutes on 2 cores)
test: $(BIN)/scorelab
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# the slow tier: fault injection at every write, torchrun end to end, long statistical tests
test-slow: $(BIN)/scorelab
	$(BIN)/python -m pytest -m slow

# mutation testing of the core (mutmut): writes benchmarks/results/mutation.md
mutate: $(BIN)/scorelab
	$(BIN)/python benchmarks/mutation.py

lint: $(BIN)/scorelab
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/scorelab
	$(BIN)/python benchmarks/train_throughput.py

# needs the optional peer: .venv/bin/pip install -e '.[bench]' (diffusers)
bench-samplers: $(BIN)/scorelab
	$(BIN)/python benchmarks/samplers.py

# dsm, ism, ssm, tsm on exact Gaussian mixtures, same network and CPU-time budget each
bench-objectives: $(BIN)/scorelab
	$(BIN)/python benchmarks/objectives.py

bench-likelihood: $(BIN)/scorelab
	$(BIN)/python benchmarks/likelihood.py

# digits needs scikit-learn; the diffusers peer is optional (.[bench]); --budget 600 by default
bench-digits: $(BIN)/scorelab
	$(BIN)/python benchmarks/digits.py

# Fashion-MNIST, scorelab vs diffusers at --budget 1200 s each (about 2 hours); needs the
# dataset-fashion-mnist package (sudo apt-get install dataset-fashion-mnist) and the bench
# extra (.venv/bin/pip install -e '.[bench]': diffusers)
bench-fashion: $(BIN)/scorelab
	$(BIN)/python benchmarks/fashion.py

# your diffusers checkpoint sampled with scorelab: a DDPMPipeline trained by diffusers' own loop
# on digits (--budget 300 s), FD of diffusers' schedulers vs scorelab's samplers at NFE 10/20/50
# and scorelab's ODE likelihood (about 15 minutes); needs the diffusers extra (.[diffusers],
# which the venv rule installs) and scikit-learn
bench-interop: $(BIN)/scorelab
	$(BIN)/python benchmarks/interop.py

# DDPM-eps, VP-SDE, EDM and flow matching at equal training on the ring, a 64-D mixture and
# digits, each with its best sampler at NFE 5/10/20/50 (about 35 minutes; run it alone)
bench-processes: $(BIN)/scorelab
	$(BIN)/python benchmarks/processes.py

# posterior sampling (dps, pigdm, ddnm, diffpir, repaint, sdedit; deepinv's DPS and DiffPIR
# when it is installed) against exact Gaussian-mixture posteriors at NFE 20/50/100/250, then
# inpainting and 2x super-resolution with a digits model trained in the run (needs
# scikit-learn; about 15 minutes on one thread)
bench-posterior: $(BIN)/scorelab
	$(BIN)/python benchmarks/posterior.py

# guidance on digits (needs scikit-learn); --budget 900 --per-class 100 by default
bench-guidance: $(BIN)/scorelab
	$(BIN)/python benchmarks/guidance.py

# VAE vs diffusion on the ring and digits at the same CPU budget (--budget 60 s per model)
bench-vae: $(BIN)/scorelab
	$(BIN)/python benchmarks/vae_vs_diffusion.py --budget 60

clean:
	rm -rf runs .pytest_cache
