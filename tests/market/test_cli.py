"""``lec market operate|curtail``: bad input is a clear error, before anything runs."""

from __future__ import annotations

import pytest

from node.cli.main import main


@pytest.mark.parametrize("action", ["operate", "curtail"])
def test_a_data_directory_without_a_community_is_a_clear_error(tmp_path, capsys, action):
    assert main(["market", action, "--data-dir", str(tmp_path)]) == 2
    assert "no community deployment recorded" in capsys.readouterr().err


def test_an_unknown_action_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["market", "trade"])
    assert exit_.value.code == 2 and "invalid choice: 'trade'" in capsys.readouterr().err
