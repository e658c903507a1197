"""transformers' own common model tests (``ModelTesterMixin``), from the sdist of the installed transformers.

The wheel does not ship ``tests/``; the sdist does (without the per-model test folders). :func:`common_tests` downloads
the sdist of the installed version once (``pip download``, into ``.cache/`` beside the checkout; set
``HF_ACTS_TRANSFORMERS_TESTS`` to a folder holding its ``tests/`` to skip that) and imports ``test_modeling_common``
as the package ``transformers_tests``. Two imports of that file live in test folders the sdist lacks: the export
mixin and the generation mixin. They become empty classes, so the export tests of the mixin do not run here (export
is tested in tests/test_ops.py and tests/test_timm_conformance.py) and a tester cannot opt into generate tests.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import transformers

ROOT = Path(__file__).resolve().parents[1]
STUBS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
}


def _tests_folder() -> Path:
    given = os.environ.get("HF_ACTS_TRANSFORMERS_TESTS")
    if given:
        return Path(given)
    version = transformers.__version__
    folder = ROOT / ".cache" / f"transformers-{version}-tests"
    if not (folder / "test_modeling_common.py").exists():
        download = ROOT / ".cache" / "sdist"
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"transformers=={version}", "-d", str(download)], check=True)
        with tarfile.open(download / f"transformers-{version}.tar.gz") as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(f"transformers-{version}/tests/")]
            archive.extractall(download, members=members, filter="data")
        shutil.copytree(download / f"transformers-{version}" / "tests", folder, dirs_exist_ok=True)
    return folder


def common_tests() -> ModuleType:
    """``test_modeling_common`` of the installed transformers, importable with its relative imports."""
    if "transformers_tests.test_modeling_common" in sys.modules:
        return sys.modules["transformers_tests.test_modeling_common"]
    source = _tests_folder()
    package = ROOT / ".cache" / "transformers_tests"
    if not (package / "test_modeling_common.py").exists():
        shutil.copytree(source, package, dirs_exist_ok=True)
        for name, text in STUBS.items():
            path = package / name
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / "__init__.py").touch()
            if not path.exists():
                path.write_text(text)
        (package / "__init__.py").touch()
    sys.path.insert(0, str(package.parent))
    return importlib.import_module("transformers_tests.test_modeling_common")
