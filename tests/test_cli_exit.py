"""The `factory` command's exit: main's exit code, and the heap left to the operating system (`cli.run`)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factory_dagster import cli
from factory_dagster.controls.kill_switch import kill_switch_state
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import open_warehouse

FACTORY = Path(sys.executable).with_name("factory")


def test_the_command_exits_with_mains_code_after_freezing_the_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "main", lambda: 3)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.run()
        assert exited.value.code == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this process goes on with other tests: give its objects back to the collector


def test_what_the_installed_command_wrote_is_in_the_warehouse_after_it_exits(tmp_path: Path) -> None:
    home = tmp_path / "data"
    environ = {**os.environ, "FACTORY_HOME": str(home)}
    engaged = subprocess.run(
        [str(FACTORY), "kill-switch", "on", "--reason", "complaint spike", "--actor", "ops"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert engaged.returncode == 0, engaged.stderr
    refused = subprocess.run([str(FACTORY), "kill-switch", "off"], env=environ, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--reason is required" in refused.stderr
    with open_warehouse(Paths.under(home), read_only=True) as con:
        state = kill_switch_state(con, "any-campaign")
    assert state.engaged and state.actor == "ops" and state.reason == "complaint spike"
