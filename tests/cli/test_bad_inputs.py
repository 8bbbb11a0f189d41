"""Every bad input of the catalogue, each in a fresh `dmfnet` process as a user runs it: the right exit code, one
line on standard error and no traceback, no crash or hang, nothing left behind, and every input byte-identical
afterwards (valid odd inputs: fused, one output file)."""

import pytest

from tests.bad_inputs import catalogue, run_case_process

CATALOGUE = catalogue()


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.name for c in CATALOGUE])
def test_bad_input(case, tmp_path, tiny_model_base):
    outcome = run_case_process(case, tmp_path, tiny_model_base)
    assert outcome.code >= 0, f"killed by signal {-outcome.code}: {outcome.stderr[-2000:]}"
    assert outcome.code == case.exit_code, outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert outcome.inputs_after == outcome.inputs_before, "an input was changed, removed or added"
    if case.exit_code:
        assert outcome.stderr.count("\n") == 1 and outcome.stderr.startswith(f"{case.tool}: error: "), \
            outcome.stderr
        assert case.message in outcome.stderr
        assert outcome.left == [], outcome.left
    else:
        assert len(outcome.left) == 1 and outcome.left[0].stat().st_size > 0
