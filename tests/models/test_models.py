import numpy as np
import pytest
import torch

from dmfnet_edge.config import PRESETS
from dmfnet_edge.models.diffusion import DiffusionObjective, gamma_grid, tile_noise, timestep_gammas
from dmfnet_edge.models.dmfnet import DMFNet
from dmfnet_edge.models.fusion import CrossModalAttention
from dmfnet_edge.models.layers import SelfAttention
from dmfnet_edge.models.unet import DiffusionUNet


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return DMFNet(PRESETS["tiny"]).eval()


def _full_decoder_features(unet: DiffusionUNet, x, gamma):
    """Features captured with hooks from the complete (unpruned) forward pass."""
    captured = []
    hooks = [unet.ups[i].register_forward_hook(lambda m, a, out: captured.append(out))
             for i in range(len(unet.ups)) if type(unet.ups[i]).__name__ == "ResBlock"]
    with torch.no_grad():
        full = unet(x, gamma)
    for h in hooks:
        h.remove()
    per_level = unet.cfg.res_blocks + 1
    return [captured[i] for i in range(0, len(captured), per_level)], full


def test_pruned_features_are_identical_to_the_unpruned_network(tiny):
    x = torch.rand(3, 1, 64, 48) * 2 - 1
    gamma = torch.tensor([0.99998, 0.9999, 0.9995])
    with torch.no_grad():
        pruned = tiny.unet.decoder_features(x, gamma, prune=True)
    reference, full = _full_decoder_features(tiny.unet, x, gamma)
    assert full.shape == x.shape
    assert len(pruned) == len(reference) == tiny.unet.cfg.levels
    for a, b in zip(pruned, reference):
        assert torch.equal(a, b)


def test_decoder_feature_shapes_paper_topology():
    unet = DiffusionUNet(PRESETS["paper"].unet)
    assert unet.feature_channels() == [256, 128, 128, 128, 128]
    attention = [name for name, m in unet.named_modules() if isinstance(m, SelfAttention)]
    assert attention == ["mid.0.attn"]  # the as-trained configuration: middle block only


def test_inference_is_deterministic_and_batch_independent(tiny):
    gen = torch.Generator().manual_seed(3)
    mri, other = torch.rand(2, 1, 64, 64, generator=gen) * 2 - 1, torch.rand(2, 1, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        a, b = tiny(mri, other), tiny(mri, other)
        single = tiny(mri[1:], other[1:])
    assert torch.equal(a, b)
    assert torch.allclose(a[1:], single, atol=1e-6)
    assert a.abs().max() < 1


def test_six_passes_run_as_one_batch_and_match_serial_passes(tiny):
    mri, other = torch.rand(1, 1, 32, 32) * 2 - 1, torch.rand(1, 1, 32, 32) * 2 - 1
    xt, gamma = tiny.noised_batch(mri, other)
    assert xt.shape == (6, 1, 32, 32)
    with torch.no_grad():
        batched = tiny.unet.decoder_features(xt, gamma)
        serial = [tiny.unet.decoder_features(xt[i:i + 1], gamma[i:i + 1]) for i in range(6)]
    for level, feat in enumerate(batched):
        assert torch.allclose(feat, torch.cat([s[level] for s in serial]), atol=1e-5)


def test_noised_batch_order_is_pair_source_timestep(tiny):
    mri, other = torch.full((1, 1, 16, 16), 0.5), torch.full((1, 1, 16, 16), -0.5)
    xt, gamma = tiny.noised_batch(mri, other)
    noise = tile_noise(tiny.noise, 16, 16)
    for k in range(3):
        expected = tiny.gammas[k] * 0.5 + tiny.sigmas[k] * noise[0, k]
        assert torch.allclose(xt[k, 0], expected)
        assert torch.allclose(xt[3 + k, 0], tiny.gammas[k] * -0.5 + tiny.sigmas[k] * noise[1, k])
    assert torch.equal(gamma, tiny.gammas.repeat(2))


def test_frozen_noise_levels_follow_the_linear_schedule():
    gammas = timestep_gammas(PRESETS["paper"].diffusion, (5, 10, 20))
    # method spec table: t=5 in 0.999972-0.999983, t=10 in 0.999882-0.999905, t=20 in 0.999515-0.999563
    assert 0.999972 < gammas[0] < 0.999983
    assert 0.999882 < gammas[1] < 0.999905
    assert 0.999515 < gammas[2] < 0.999563
    grid = gamma_grid(PRESETS["paper"].diffusion)
    assert grid[0] == 1 and np.all(np.diff(grid) < 0)


def test_noise_tiles_periodically_for_large_images(tiny):
    k = tiny.noise.shape[-1]
    big = tile_noise(tiny.noise, k + 16, 2 * k + 5)
    assert big.shape[-2:] == (k + 16, 2 * k + 5)
    assert torch.equal(big[..., k:k + 16, :k], tiny.noise[..., :16, :])


def test_diffusion_objective_samples_gamma_within_the_timestep_interval(monkeypatch):
    """gamma ~ U(grid[t], grid[t-1]) for the sampled t, and x_t = gamma x0 + sqrt(1 - gamma^2) eps exactly, for a
    known x0 and a known noise field (both ends of the schedule: gamma ~ 1 at t = 1, ~ 0.007 at t = T)."""
    cfg = PRESETS["tiny"].diffusion
    obj = DiffusionObjective(cfg)
    t = torch.tensor([1, 2, 10, 100, 500, 1000, cfg.timesteps - 1, cfg.timesteps]).repeat(8)
    monkeypatch.setattr(obj, "sample_t", lambda n, generator=None: t[:n])
    x0 = torch.rand(len(t), 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))

    def known_noise(size, **kwargs):
        assert tuple(size) == x0.shape, size
        return eps.clone()

    with monkeypatch.context() as patch:  # the objective's noise draw returns the known field
        patch.setattr(torch, "randn", known_noise)
        xt, gamma = obj.noised(x0, torch.Generator().manual_seed(0))
    assert xt.shape == x0.shape and gamma.shape == (len(t),)
    grid = torch.from_numpy(gamma_grid(cfg)).float()
    lo, hi = grid[t], grid[t - 1]
    assert torch.all((lo <= gamma) & (gamma <= hi))
    # spread over the interval, not pinned to one end (near gamma = 1 an interval is a few float32 steps wide)
    wide = t >= 10
    where = (gamma[wide] - lo[wide]) / (hi[wide] - lo[wide])
    assert where.min() < 0.25 and where.max() > 0.75
    g = gamma.view(-1, 1, 1, 1)
    assert torch.allclose(xt, g * x0 + torch.sqrt(1 - g * g) * eps, rtol=0, atol=1e-6)


def test_cross_modal_attention_interleaves_and_fuses_as_specified():
    torch.manual_seed(0)
    att = CrossModalAttention(4, 2).eval()
    x, y = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    s = x + y
    a_s = att.spatial(torch.cat([s.mean(1, keepdim=True), s.max(1, keepdim=True).values], 1))
    p1 = a_s + att.channel(s)
    interleaved = torch.cat([torch.stack([s[:, c], p1[:, c]], 1) for c in range(4)], 1)
    w = s * torch.sigmoid(att.pixel(interleaved))
    with torch.no_grad():
        assert torch.allclose(att(x, y), w * x + (1 - w) * y + x + y, atol=1e-6)


def test_low_noise_timestep_sampling_puts_half_the_mass_below_100():
    obj = DiffusionObjective(PRESETS["tiny"].diffusion, "low-noise")
    t = obj.sample_t(20000, torch.Generator().manual_seed(0))
    assert t.min() >= 1 and t.max() <= 2000
    share = float((t <= 100).float().mean())
    assert 0.5 < share < 0.55  # 1/2 from 1..100 plus 1/2 * 100/2000 from the uniform half
    uniform = DiffusionObjective(PRESETS["tiny"].diffusion).sample_t(20000, torch.Generator().manual_seed(0))
    assert float((uniform <= 100).float().mean()) < 0.07
    with pytest.raises(ValueError):
        DiffusionObjective(PRESETS["tiny"].diffusion, "bogus")


def test_saved_weights_get_the_umask_permissions_like_every_other_output(tmp_path):
    """safetensors writes its own new file (0600): the weights would be unreadable for other users."""
    import stat

    from dmfnet_edge.files import FILE_MODE
    from dmfnet_edge.models.checkpoint import build_model, save_model

    model = build_model("tiny")
    save_model(model, model.cfg, tmp_path / "m", "dmfnet", {})
    for name in ("m.safetensors", "m.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == FILE_MODE, name


def test_the_fused_pixel_attention_op_on_cpu_matches_the_module_it_replaces():
    """The custom op dmfnet::pixel_attention_fuse (its CPU path: the GPU backend and the TensorRT plugin
    graph route through it) computes what CrossModalAttention computes, and passes PyTorch's op checks (schema,
    fake tensor, autograd registration)."""
    from dmfnet_edge.models.kernels import attention_maps, pixel_attention_fuse

    torch.manual_seed(5)
    module = CrossModalAttention(8, 4).eval()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, y = torch.randn(2, 8, 12, 10), torch.randn(2, 8, 12, 10)
    with torch.no_grad():
        expected = module(x, y)
        module.use_fused_kernel = True
        fused = module(x, y)
        a_s, a_c = attention_maps(module, x + y)
    assert torch.allclose(fused, expected, atol=1e-5, rtol=0) and not torch.equal(fused, x + y)
    torch.library.opcheck(pixel_attention_fuse, (x, y, a_s, a_c, module.pixel.weight.detach(),
                                                 module.pixel.bias.detach()),
                          test_utils=("test_schema", "test_faketensor"))


def test_a_network_with_every_attention_fused_fuses_the_same_pixels(tiny):
    import copy

    fused_net = copy.deepcopy(tiny)
    layers = [m for m in fused_net.modules() if isinstance(m, CrossModalAttention)]
    assert len(layers) == len(fused_net.fusion.attention) > 1  # one per feature level
    for layer in layers:
        layer.use_fused_kernel = True
    a, b = torch.rand(1, 1, 64, 64) * 2 - 1, torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(fused_net(a, b), tiny(a, b), atol=1e-5, rtol=0)
