"""Where a registered hf-acts timm model cannot meet a check of timm's model contract, and why: declared once here,
read by the conformance tests (``tests/test_timm_conformance.py``) and listed in the README."""

from __future__ import annotations

import fnmatch

# model-name pattern -> {check: reason}
EXCEPTIONS: dict[str, dict[str, str]] = {
    "*_aiec": {
        "backward": "AIEC's decision units (`.decision.weight`) learn from AIEC's auxiliary losses (Eq. 14), not from "
                    "the logits: a loss on the logits alone gives them no gradient",
    },
    "mlp_mnist1d": {
        "features_only": "an MLP on flattened signals has no spatial feature maps (no feature_info); "
                         "features_only=True raises",
        "forward_intermediates": "no feature stages: the hidden layers are vectors",
        "default_cfgs": "timm's default-cfg checks expect spatial (4-D) features and a pool_size; the MLP's features "
                        "are vectors",
        "in_chans": "the first layer is a Linear over the flattened signal: in_chans other than 1 changes its width, "
                    "so timm cannot adapt pretrained weights to it and re-initialises that layer (with a warning)",
    },
}


def contract_exceptions(model_name: str) -> dict[str, str]:
    """The declared exceptions ``{check: reason}`` of ``model_name`` (empty: it meets the whole contract)."""
    found: dict[str, str] = {}
    for pattern, checks in EXCEPTIONS.items():
        if fnmatch.fnmatch(model_name, pattern):
            found.update(checks)
    return found
