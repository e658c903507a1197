"""Copy the activation modules that transformers' remote code needs beside ``modeling_hf_acts.py``.

``save_pretrained`` of an hf-acts LM copies ``modeling_hf_acts.py`` and the files it imports relatively from its own
folder, so ``hf_acts/integrations/transformers/`` holds copies of these modules (real files, not symlinks: checkouts
and archives without symlink support would get text files). Run this after editing them;
``tests/test_transformers.py`` fails while a copy is stale.
"""

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "hf_acts"
REMOTE_CODE_MODULES = (
    "_base.py", "adrelu.py", "aiec.py", "bases.py", "dynactglu.py", "dynactivation.py", "fles.py", "swish_beta.py")


def main() -> None:
    for name in REMOTE_CODE_MODULES:
        shutil.copyfile(ROOT / "activations" / name, ROOT / "integrations" / "transformers" / name)
        print(f"copied activations/{name}")


if __name__ == "__main__":
    main()
