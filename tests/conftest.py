"""Fixtures of the engine tests (tests/engine, tests/reliability); the code they use is in
tests/support/engine.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.engine import PulumiCli, engine_env, ensure_cli


@pytest.fixture(scope="session")
def pulumi_cli() -> PulumiCli:
    """The Pulumi CLI (found or built once per session); fails the test when unavailable."""
    return ensure_cli()


@pytest.fixture
def pulumi_env(pulumi_cli: PulumiCli, tmp_path: Path) -> dict[str, str]:
    """A fresh, isolated engine environment for one test."""
    return engine_env(pulumi_cli, tmp_path / ".pulumi-env")
