"""Cross-attention maps (diffusion.attention): exact probabilities, sums, isolation, no side effects."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from diffusion.attention import (
    AttentionStore,
    CrossAttentionRecorder,
    attention_probs,
    install_recorders,
    recording,
)
from diffusion.lab.trajectory import attention_overlays
from diffusion.pipeline import latent_steps
from diffusion.request import SampleRequest
from tests.tiny import tiny_sd_pipeline, tiny_unet


def _unet_inputs(unet, batch: int = 2, seed: int = 0):
    g = torch.Generator("cpu").manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    context = torch.randn(batch, 8, unet.config.cross_attention_dim, generator=g)
    return x, torch.tensor(37), context


def test_recorded_probabilities_equal_diffusers_own_attention_probabilities() -> None:
    """Each cross-attention layer: our probabilities equal those diffusers' AttnProcessor computes."""
    unet = tiny_sd_pipeline().unet.eval()
    unet.set_attn_processor(AttnProcessor())  # the reference processor, which materialises the softmax
    seen: list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = []
    reference: list[torch.Tensor] = []
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            original = module.get_attention_scores

            def capture(query, key, mask=None, _original=original, _module=module):
                probs = _original(query, key, mask)
                reference.append(probs.view(-1, _module.heads, *probs.shape[1:]).mean(dim=1))
                return probs

            module.get_attention_scores = capture
            module.register_forward_pre_hook(
                lambda mod, args, kwargs: seen.append((mod, args[0], kwargs["encoder_hidden_states"])),
                with_kwargs=True)
    x, t, context = _unet_inputs(unet)
    with torch.no_grad():
        unet(x, t, encoder_hidden_states=context)
        ours = [attention_probs(mod, hidden, states) for mod, hidden, states in seen]
    assert len(ours) == len(reference) == 4  # 8x8 down, 4x4 middle, two 8x8 up layers
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b.float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:2]), rtol=0, atol=1e-5)


def test_install_is_idempotent_and_skips_unconditional_unets() -> None:
    unet = tiny_sd_pipeline().unet
    assert install_recorders(unet) == 4
    assert install_recorders(unet) == 4
    processors = unet.attn_processors
    wrapped = [p for name, p in processors.items() if isinstance(p, CrossAttentionRecorder)]
    assert len(wrapped) == 4 and all(not isinstance(p.inner, CrossAttentionRecorder) for p in wrapped)
    assert all(name.endswith("attn2.processor") for name, p in processors.items() if p in wrapped)
    assert install_recorders(tiny_unet()) == 0


def test_maps_sum_to_one_per_position_and_record_only_inside_the_context() -> None:
    unet = tiny_sd_pipeline().unet.eval()
    install_recorders(unet)
    x, t, context = _unet_inputs(unet)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=context).sample
        with recording(AttentionStore((8, 8))) as store:
            recorded = unet(x, t, encoder_hidden_states=context).sample
            # a call from another thread (another request) does not see this context's store
            with ThreadPoolExecutor(1) as pool:
                pool.submit(lambda: unet(x, t, encoder_hidden_states=context)).result()
    torch.testing.assert_close(recorded, plain, rtol=0, atol=0)  # recording never changes the output
    maps = store.maps()
    assert maps.layers == {8: 3, 4: 1}  # the other thread added nothing
    for m in [*maps.by_resolution.values(), maps.mean()]:
        assert m.shape == (2, 8, 8, 8)  # (B, L tokens, h, w)
        torch.testing.assert_close(m.sum(dim=1), torch.ones(2, 8, 8), rtol=0, atol=1e-5)
    torch.testing.assert_close(maps.mean(), (3 * maps.mean(8) + maps.mean(4)) / 4)


def test_latent_steps_with_recording_give_the_same_images_and_the_conditional_maps(studio) -> None:
    model = studio.load("local/tiny-sd")
    request = SampleRequest(sampler="ddim", steps=3, n=2, seed=5, prompt="a red circle", guidance_scale=3.0)
    plain = list(latent_steps(model, request))
    recorded = list(latent_steps(model, request, record_attention=True))
    assert all(r.cross_attention is None for r in plain)
    for a, b in zip(plain, recorded, strict=True):
        assert torch.equal(a.prev_sample, b.prev_sample)
        assert b.cross_attention.mean().shape == (2, 8, 8, 8)  # conditional half only: n = 2 images
    # the maps are the conditional branch's: rerun the last step's UNet call on [uncond; cond] and compare
    last = recorded[-1]
    from diffusion.prompts import encode_prompt

    with torch.no_grad(), recording(AttentionStore((8, 8))) as store:
        context = torch.cat([encode_prompt(model, [""] * 2), encode_prompt(model, ["a red circle"] * 2)])
        model.unet(torch.cat([last.model_input] * 2), torch.tensor(last.timestep), encoder_hidden_states=context)
    torch.testing.assert_close(store.maps().mean()[2:], last.cross_attention.mean())


def test_trajectory_keeps_float16_maps_of_the_prompt_tokens_and_overlays_them(studio) -> None:
    request = SampleRequest(sampler="ddim", steps=3, n=1, seed=0, prompt="a red circle", guidance_scale=3.0)
    *_, (_, _, traj) = studio.trajectory("local/tiny-sd", request)
    assert traj.tokens == ["[BOS]", "a", "red", "circle", "[EOS]", "padding"]
    assert traj.attention_layers == {"8x8": 3, "4x4": 1}
    for view in traj.steps:
        assert set(view.attention) == {"all", "8x8", "4x4"}
        for maps in view.attention.values():
            assert maps.dtype == np.float16 and maps.shape == (6, 8, 8)
            np.testing.assert_allclose(maps.astype(np.float32).sum(axis=0), 1.0, atol=2e-3)
    overlays = attention_overlays(traj.steps[1], traj.tokens, "8x8")
    assert [label.split(" · ")[0] for _, label in overlays] == traj.tokens
    assert all(img.shape == (16, 16, 3) and img.dtype == np.uint8 for img, _ in overlays)
    shares = [int(label.split(" · ")[1].rstrip("%")) for _, label in overlays]
    assert abs(sum(shares) - 100) <= len(shares)  # rounded shares of all tokens add up to 100%
    with pytest.raises(ValueError, match="no cross-attention maps"):
        attention_overlays(traj.steps[1], traj.tokens, "2x2")


def test_pixel_trajectories_record_no_attention(studio) -> None:
    *_, (_, _, traj) = studio.trajectory("ddpm-mnist" if "ddpm-mnist" in [c.id for c in studio.cards()]
                                         else studio.cards("pixel")[0].id, SampleRequest(steps=2, n=1))
    assert traj.tokens is None and all(view.attention is None for view in traj.steps)
