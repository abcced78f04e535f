"""The ``cxr-instruct`` command group (pipelines/cli.py): every command is registered one way, by name in
``COMMANDS``, and imported only when it is used."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from pipelines.cli import COMMANDS, main


def test_every_registered_command_is_a_click_command_of_that_name():
    for name in COMMANDS:
        command = main.get_command(click.Context(main), name)
        assert isinstance(command, click.Command), name
        assert command.name == name
        assert command.help, f"{name} has no help text"


def test_help_lists_every_command_with_its_short_help():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == sorted(COMMANDS)
    assert all(len(line.split()) > 1 for line in listed if line.strip())


def test_an_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output


def test_a_command_imports_only_its_own_module():
    """``build --help`` does not import the tokenizer's module (which brings torch) nor the exports."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from pipelines.cli import main\n"
        "assert CliRunner().invoke(main, ['build', '--help']).exit_code == 0\n"
        "print(sorted(m for m in ('torch', 'pipelines.beam.tokenize', 'pipelines.training.export') if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
