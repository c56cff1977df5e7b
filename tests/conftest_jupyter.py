"""Registers the JupyterLab and Chromium fixtures of tests/jupyter_fixtures.py.

tests/conftest.py lists this module in ``pytest_plugins``.
"""

from tests.jupyter_fixtures import (  # noqa: F401 - fixtures and the report hook
    browser,
    devnet_lab,
    lab,
    output_dir,
    page,
    pytest_runtest_makereport,
)
