"""Usage errors are one line: an invalid choice names the choices and the nearest one; every one says which
--help to read."""

from __future__ import annotations

import pytest


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("featscope: error: "), stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "given", "choices", "nearest", "command"),
    [
        (["decode", "--preset", "fsat"], "fsat", ["reference", "fast", "faster", "refine"], "fast", "decode"),
        (["investigate", "neuron", "--direction", "sideways"], "sideways", ["up", "down"], "down",
         "investigate neuron"),
        (["decod"], "decod", ["decode", "encode", "investigate", "featinv"], "decode", ""),
    ],
    ids=["preset", "direction", "command"],
)  # fmt: skip
def test_an_invalid_choice_is_one_line_with_the_choices_and_the_nearest(featscope_main, args, given, choices,
                                                                        nearest, command):  # fmt: skip
    result = featscope_main(*args)
    line = one_error_line(result.stderr)
    assert result.returncode == 2 and f"invalid choice {given!r}" in line
    assert all(choice in line for choice in choices) and f"the nearest is {nearest!r}" in line, line
    assert line.endswith(f"see featscope{' ' + command if command else ''} --help"), line


def test_other_usage_errors_are_one_line_too(featscope_main):
    result = featscope_main("decode", "--steps", "abc")
    assert result.returncode == 2 and "invalid int value: 'abc'" in one_error_line(result.stderr)
