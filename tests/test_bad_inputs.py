"""Every bad input of the catalogue: one line, the right exit code, no traceback, nothing left behind."""

import pytest

from tests.bad_inputs import CATALOGUE, run_case


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.name for c in CATALOGUE])
def test_bad_input(case, tmp_path, tiny_model_base):
    code, stderr, left = run_case(case, tmp_path, tiny_model_base)
    assert code == case.exit_code, stderr
    assert "Traceback" not in stderr
    if case.exit_code:
        assert stderr.count("\n") == 1 and stderr.startswith("dmfnet: error: "), stderr
        assert case.message in stderr
        assert left == [], left
    else:
        assert len(left) == 1 and left[0].stat().st_size > 0
