# Two commands: `make demo` (the main job on embedded offline data) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo demo-swap reproduce test test-all test-lowest lint venv

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision first, from this machine's wheel cache; the rest must not replace them
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

LAUNCH := $(PY) -m accelerate.commands.launch --config_file finetune/configs/cpu_single.yaml finetune/vision.py
DEMO := outputs/demo-resnet8_cifar_adrelu-digits

demo: venv
	$(LAUNCH) @finetune/configs/demo.args --output-dir $(DEMO) $(if $(wildcard $(DEMO)/training_args.json),--resume,)

# the ADReLU paper's recipe at small scale: a SiLU base, then its last three SiLUs -> ADReLU (fine-tuned) against
# the same steps with SiLU kept; a finished step is reused
demo-swap: venv
	$(if $(wildcard outputs/demo-swap-base/metrics.json),,$(LAUNCH) @finetune/configs/demo_swap_base.args --output-dir outputs/demo-swap-base)
	$(if $(wildcard outputs/demo-swap-adrelu/metrics.json),,$(LAUNCH) @finetune/configs/demo_swap_adrelu.args --model local-dir:outputs/demo-swap-base --output-dir outputs/demo-swap-adrelu)
	$(if $(wildcard outputs/demo-swap-silu/metrics.json),,$(LAUNCH) @finetune/configs/demo_swap_silu.args --model local-dir:outputs/demo-swap-base --output-dir outputs/demo-swap-silu)

# the reproduction suite (each experiment ~5-30 minutes on 2 CPUs; --quick variants run in the tests) and its report
reproduce: venv
	for e in adrelu_fc adrelu_sparsity dynact_depth dynactglu_lm fles aiec demo; do $(PY) scripts/reproduce/$$e.py || exit 1; done
	$(PY) scripts/reproduce/report.py

# the suite within its ~10 minute budget: everything except tests marked slow, which keeps one real
# training-to-reload run (tests/test_finetune.py::test_lm_tiny_end_to_end_and_reload)
test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

# everything, the slow end-to-end runs included (sharding engines, wheel install, transformers' common tests, ...)
test-all: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# the non-slow suite on the oldest releases pyproject.toml allows: every dependency pinned to its lower bound, the
# rest resolved as pip resolves it for a user (torch stays 2.14.1 from this machine's wheel cache); in its own venv
LOWEST := .venv-lowest
test-lowest: venv
	python3 -m venv $(LOWEST)
	$(LOWEST)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) scripts/lowest_constraints.py --extra test > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/pip install -q -c $(LOWEST)/constraints.txt -e ".[test]"
	$(LOWEST)/bin/python -m pytest -q -m "not slow"

lint: venv
	$(PY) -m ruff check .
