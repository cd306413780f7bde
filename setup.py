"""Finds the packages, so a new subpackage of proxy/ or desktop/ is never missing from the wheel.

Everything else is in pyproject.toml; setuptools cannot both find packages and map
resources/ to lockgate_resources from pyproject.toml alone.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["proxy", "proxy.*", "desktop", "desktop.*"]),
        "lockgate_resources",
    ]
)
