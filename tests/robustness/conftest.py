"""Fixtures of the bad-input and fault suite (see docs/robustness.md for the table of cases)."""

from __future__ import annotations

import pytest

from tests.robustness import image_cases


@pytest.fixture(scope="session")
def case_images(tmp_path_factory) -> dict[str, str]:
    """Every file of `image_cases.CASES`, written once per session: {case name: path}."""
    return image_cases.write_cases(str(tmp_path_factory.mktemp("image_cases")))
