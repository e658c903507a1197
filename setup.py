"""Ships the top-level ``model_cards/`` templates inside the wheel as ``hf_acts/model_cards`` (package data).

Everything else is declared in ``pyproject.toml``; the editable source of the templates stays ``model_cards/``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithCards(build_py):
    def run(self) -> None:
        super().run()
        shutil.copytree(Path(__file__).parent / "model_cards", Path(self.build_lib) / "hf_acts" / "model_cards",
                        dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithCards})
