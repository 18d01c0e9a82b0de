"""One command-line vocabulary across ``ns-diffusion``: booleans take {True,False} as in ns-train, and the same concept
has the same flag in every command (--num-steps, --output, --dtype with torch's names, --load-config)."""

from __future__ import annotations

import re

import pytest

from ns_diffusion_methods.cli.main import COMMANDS, main


def _help(name: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*name.split(" "), "--help"])
    return re.sub(r"\s+", " ", capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_speaks_the_same_vocabulary(name, capsys):
    text = _help(name, capsys)
    assert "--no-" not in text  # booleans are --flag {True,False}, never --flag/--no-flag
    for old in ("--ddim-steps", "--num-frames", "--steps ", "--out ", "--config ", "fp16", "bf16"):
        assert old not in text, (name, old)
    if "--dtype" in text:
        assert "{auto,float32,float16,bfloat16}" in text


def test_booleans_take_a_value(capsys):
    assert "--in-place {True,False}" in _help("add-masks", capsys)
