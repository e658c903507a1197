# Two commands: `make demo` (the main job on embedded offline data) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test lint venv

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

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .
