#!/usr/bin/env bash
# Run timm's own model tests (tests/test_models.py of a pytorch-image-models checkout) against the hf-acts models:
#   scripts/timm_model_tests.sh /path/to/pytorch-image-models [extra pytest args]
# hf-acts is imported by a conftest.py before timm's test module lists the models; the network tests are deselected.
set -euo pipefail
TIMM_REPO=$(realpath "$1"); shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d)
mkdir -p "$WORK/tests"
cp "$TIMM_REPO/tests/test_models.py" "$WORK/tests/"
touch "$WORK/tests/__init__.py"
echo "import hf_acts  # noqa: F401  (registers the hf-acts models before timm lists them)" > "$WORK/conftest.py"
NAMES=$("$PY" -c "import hf_acts.models.zoo as z; print(' or '.join(sorted({*z.ZOO, 'resnet8_cifar', 'resnet32_cifar', 'mlp_mnist1d'})))")
cd "$WORK"
HF_HUB_OFFLINE=1 "$PY" -m pytest -q -p no:cacheprovider tests/test_models.py -k "($NAMES) and not pretrained" -rf "$@"
