"""Copy the ``targets/`` and ``pipelines/`` data folders into wheels.

The folders live at the repository root (one file per target / recipe, easy to find and edit);
a wheel carries them inside the package as ``apprentice_hw/_bundled/``, which is where
``apprentice_hw.resources`` looks when no source checkout is next to the package.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_FOLDERS = ("targets", "pipelines")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).parent
        for folder in DATA_FOLDERS:
            destination = Path(self.build_lib) / "apprentice_hw" / "_bundled" / folder
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(root / folder, destination)


setup(cmdclass={"build_py": BuildPyWithData})
