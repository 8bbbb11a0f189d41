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


@pytest.mark.parametrize("where, value, message", [
    (("diffusion", "schedule"), "banana", "diffusion.schedule must be 'linear' or 'cosine'"),
    (("fusion", "timesteps"), [-5, 10], "fusion.timesteps\\[\\] must be a positive integer, got -5"),
    (("fusion", "timesteps"), [5, 10, 5000], "5000 is beyond diffusion.timesteps 2000"),
    (("fusion", "timesteps"), [], "fusion.timesteps must be a non-empty list"),
    (("unet", "base_channels"), "sixteen", "unet.base_channels must be a positive integer, got 'sixteen'"),
    (("unet", "base_channels"), True, "unet.base_channels must be a positive integer, got True"),
    (("unet", "channel_mults"), [], "unet.channel_mults must be a non-empty list"),
    (("unet", "norm_groups"), 3, "unet.norm_groups 3 must divide every level's width"),
    (("unet", "dropout"), 3.0, "unet.dropout must be a number in \\[0, 1\\)"),
    (("fusion", "noise_tile"), 0, "fusion.noise_tile must be a positive integer"),
    (("fusion", "noise_tile"), 100, "fusion.noise_tile must be a multiple of 16"),
    (("fusion", "source_skip"), "yes", "fusion.source_skip must be true or false"),
    (("fusion", "max_gate"), 1, "fusion.max_gate must be true or false"),
    (("fusion", "max_gate"), True, "fusion.max_gate needs fusion.source_skip"),
    (("diffusion", "linear_end"), 2.0, "0 < start < end < 1"),
    (("unet",), [1, 2], "'unet' must be an object"),
])
def test_configs_with_wrong_types_or_values_are_one_clear_error(where, value, message):
    """Valid JSON of the wrong structure or with values no model can be built from: refused before any model
    is built, naming the field (these were tracebacks)."""
    data = PRESETS["tiny"].to_dict()
    target = data
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(ModelFileError, match=message):
        ModelConfig.from_dict(data)


def test_a_config_that_is_not_an_object_is_refused():
    with pytest.raises(ModelFileError, match="expected an object, got list"):
        ModelConfig.from_dict([1, 2])


def test_unknown_preset():
    with pytest.raises(InputError, match="paper"):
        preset("huge")
