"""The ``nas`` command as a user runs it: version, presets, and one-line errors."""

from __future__ import annotations

import json


def test_version_and_help(nas) -> None:
    result = nas("--version")
    assert result.returncode == 0 and result.stdout.strip() == "shufflenas 0.1.0"
    result = nas("--help")
    assert result.returncode == 0 and "presets" in result.stdout


def test_presets_table_and_json(nas) -> None:
    table = nas("presets")
    assert table.returncode == 0
    assert "shufflenet_v1_1.0x_g3" in table.stdout and "137.461" in table.stdout and "1.8647" in table.stdout
    rows = {row["name"]: row for row in json.loads(nas("presets", "--json").stdout)}
    assert rows["shufflenet_v1_2.0x_g8"]["mflops"] == 521.942
    assert rows["shufflenet_v1_2.0x_g8"]["mparams"] == 6.5212
    assert rows["shufflenet_v1_0.5x_g3"]["stem"] == 12


def test_bad_arguments_give_one_line_and_exit_2(nas) -> None:
    for args in (["presets", "--input-size", "10"], ["no-such-command"], ["presets", "--bogus"]):
        result = nas(*args)
        assert result.returncode == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nas: error:"), result.stderr
        assert "Traceback" not in result.stderr
