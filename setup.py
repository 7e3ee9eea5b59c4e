"""Builds every Cython module in ext/ (the rest of the metadata is in pyproject.toml)."""
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(f"ext.{pyx.stem}", [str(pyx)], include_dirs=[numpy.get_include()],
              extra_compile_args=["-O3"], define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
    for pyx in sorted(Path("ext").glob("*.pyx"))
]

setup(ext_modules=cythonize(extensions, language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False,
                                                 "cdivision": True, "initializedcheck": False}))
