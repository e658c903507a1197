# Two commands: `make demo` (the main job on embedded offline data) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-all lint venv

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision first, from this machine's wheel cache; the rest must not replace them
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m accelerate.commands.launch --config_file finetune/configs/cpu_single.yaml finetune/vision.py \
		--model efficientnetv2_rw_t_adrelu --dataset digits --img-size 64 --hflip 0 --epochs 3 --batch-size 32 \
		--output-dir outputs/demo-efficientnetv2_rw_t_adrelu-digits $(if $(wildcard outputs/demo-efficientnetv2_rw_t_adrelu-digits/training_args.json),--resume,)

# the suite within its ~10 minute budget: everything except tests marked slow, which keeps one real
# training-to-reload run (tests/test_finetune.py::test_lm_tiny_end_to_end_and_reload)
test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

# everything, the slow end-to-end runs included (sharding engines, wheel install, transformers' common tests, ...)
test-all: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .
