"""The README's commands run as written from a fresh clone after `make demo` / `make test`: the
console scripts and `flask` are in `.venv/bin`, not on a newcomer's PATH."""
import re
import sys
from pathlib import Path

from parking import create_app
from parking.config import PROJECT_DIR

README = (PROJECT_DIR / "README.md").read_text()
SCRIPTS = ("flask", "parking-run", "parking-gateway", "parking-simulate")


def _command_lines() -> list[str]:
    """Code spans and code-block lines that call flask or a console script with arguments."""
    spans = re.findall(r"`([^`\n]+)`", README)
    blocks = [line for block in re.findall(r"```sh\n(.*?)```", README, re.S) for line in block.splitlines()]
    lines = [text.split("#")[0].strip() for text in spans + blocks]
    return [
        line for line in lines
        if " " in line and line.split()[0].removeprefix(".venv/bin/") in SCRIPTS
    ]


def test_every_readme_command_names_the_venv_and_exists():
    commands = _command_lines()
    assert len(commands) >= 4, commands
    bare = [line for line in commands if not line.startswith(".venv/bin/")]
    assert bare == [], "commands a newcomer cannot run without activating the venv"
    flask_commands = set(create_app({"TESTING": True}).cli.list_commands(None))
    for line in commands:
        words = line.split()
        # The venv running the tests is the one `make test` made (.venv/bin of the clone).
        assert (Path(sys.prefix) / "bin" / words[0].removeprefix(".venv/bin/")).exists(), line
        if words[0] == ".venv/bin/flask":
            assert words[1:3] == ["--app", "app"], line
            assert len(words) == 3 or words[3] in flask_commands or words[3] == "…", line
