import pytest

from dmfnet_edge.config import PRESETS, ModelConfig, preset
from dmfnet_edge.errors import InputError, ModelFileError
from dmfnet_edge.models.dmfnet import DMFNet, parameter_count
from dmfnet_edge.models.flops import pair_flops


def test_paper_preset_has_the_published_parameter_counts():
    model = DMFNet(PRESETS["paper"])
    assert parameter_count(model.unet) == 20_670_081
    assert parameter_count(model.fusion) == 3_026_640
    assert len(model.unet.state_dict()) == 333


def test_edge_preset_fits_the_flop_budget():
    flops = pair_flops(DMFNet(PRESETS["edge"]), 256)
    assert flops["total"] <= 60e9
    assert flops["unet"] > flops["fusion"] > 0


def test_paper_flops_match_the_measured_pruned_cost():
    flops = pair_flops(DMFNet(PRESETS["paper"]), 256)
    # method spec: 6 passes with the unused tail pruned + head = ~1,705 GFLOP; head 115.1 GFLOP
    assert flops["total"] / 1e9 == pytest.approx(1705, rel=0.01)
    assert flops["fusion"] / 1e9 == pytest.approx(115.1, rel=0.01)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_json_round_trip(name):
    cfg = PRESETS[name]
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_malformed_configs_are_clear_errors():
    with pytest.raises(ModelFileError, match="not valid JSON"):
        ModelConfig.from_json("{")
    data = PRESETS["tiny"].to_dict()
    data["unet"]["bogus"] = 1
    with pytest.raises(ModelFileError, match="bogus"):
        ModelConfig.from_dict(data)
    with pytest.raises(ModelFileError, match="version"):
        ModelConfig.from_dict({**PRESETS["tiny"].to_dict(), "config_version": 99})


def test_unknown_preset():
    with pytest.raises(InputError, match="paper"):
        preset("huge")
