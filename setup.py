"""Build the optional C accelerator of the capture thread (conntui/_fastpath.c).

Everything else is in pyproject.toml. ``optional=True``: without a C compiler or the Python
headers the build goes on without it, and conntui runs its pure-Python path (slower: see
bench/README.md); ``conntui --version`` says which one is in use.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "conntui._fastpath",
            ["conntui/_fastpath.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
