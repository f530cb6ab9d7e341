"""Map the repository's top-level folders onto one import namespace.

``agent/`` installs as ``mathagent.agent``, ``sandbox/`` as ``mathagent.sandbox`` and so on, so no
generic top-level name (``agent``, ``evals``) ever lands in site-packages. ``mathagent`` itself
is a namespace package (PEP 420). Everything else lives in
pyproject.toml.
"""

from setuptools import find_packages, setup

TOP = ("agent", "sandbox", "training", "evals")

packages: list[str] = []
package_dir: dict[str, str] = {}
for top in TOP:
    for pkg in find_packages(include=[top, f"{top}.*"]):
        packages.append(f"mathagent.{pkg}")
    package_dir[f"mathagent.{top}"] = top

setup(packages=packages, package_dir=package_dir)
