"""Stage 2 of ``ldm-shapes``: text encoder and cross-attention UNet in the autoencoder's
latent space (Rombach et al. 2022, Sec. 3.3, Eq. 3), with classifier-free guidance training
(Ho & Salimans 2022: the caption is replaced by "" 10% of the time).

The autoencoder from ``train_autoencoder`` is frozen. A bank of scenes is rendered and
encoded once (posterior mean and std, cached in ``--output_dir``); each step draws latents
from those posteriors and a fresh caption wording for each scene, so the text encoder sees
the same picture described in many ways. The text encoder is a small ``CLIPTextModel``
trained from scratch jointly with the UNet, over a word-level tokenizer built from the
caption vocabulary. Every checkpoint exports the EMA weights as a diffusers
``StableDiffusionPipeline`` (safetensors) and a preview grid drawn by the app's sampling code.

    python -m diffusion.training.train_ldm --vae runs/ldm-shapes-vae/vae --output_dir runs/ldm-shapes
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from diffusion.data import shapes
from diffusion.images import from_uint8, make_grid, to_uint8
from diffusion.loading import load_pipeline
from diffusion.pipeline import decode_latents, latent_steps
from diffusion.registry import local_card
from diffusion.request import SampleRequest
from diffusion.text import build_word_tokenizer
from diffusion.training.common import (
    add_run_args,
    resume,
    save_args,
    save_checkpoint,
    setup_run,
)

logger = logging.getLogger("train_ldm")

PREVIEW_PROMPTS = (
    "a large red circle in the top left corner", "a small blue square in the center",
    "a large yellow star at the bottom", "a small green triangle on the right",
    "a large pink heart in the bottom right corner", "a purple diamond at the top",
    "a red circle left of a blue square", "a purple star in the center",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", type=Path, default=Path("runs/ldm-shapes-vae/vae"))
    p.add_argument("--output_dir", type=Path, default=Path("runs/ldm-shapes"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bank_size", type=int, default=40000, help="scenes rendered and encoded once")
    p.add_argument("--two_object_prob", type=float, default=0.25)
    p.add_argument("--train_batch_size", type=int, default=32)
    p.add_argument("--max_train_steps", type=int, default=12000)
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--lr_warmup_steps", type=int, default=300)
    p.add_argument("--block_out_channels", type=int, nargs="+", default=[64, 128, 128],
                   help="UNet channels per resolution level (16x16, 8x8, 4x4, ...)")
    p.add_argument("--cross_attention", type=int, nargs="+", default=[0, 1, 0],
                   help="1 where a level has cross-attention to the caption (one flag per level)")
    p.add_argument("--text_hidden_size", type=int, default=128)
    p.add_argument("--text_layers", type=int, default=3)
    p.add_argument("--max_length", type=int, default=24, help="tokens per caption, with start and end")
    p.add_argument("--caption_dropout", type=float, default=0.1)
    p.add_argument("--snr_gamma", type=float, default=0.0,
                   help="Min-SNR-gamma loss weighting (epsilon prediction only; 0: off)")
    p.add_argument("--prediction_type", default="v_prediction", choices=["epsilon", "v_prediction"],
                   help="what the UNet predicts; see make_noise_scheduler")
    p.add_argument("--ema_max_decay", type=float, default=0.999)
    p.add_argument("--beta_schedule", default="linear", choices=["linear", "scaled_linear"],
                   help="noise schedule; 'linear' (DDPM's) leaves almost no signal at t=T, see make_noise_scheduler")
    p.add_argument("--init_from", type=Path, default=None,
                   help="a saved pipeline folder whose UNet and text encoder weights start the run (fine-tuning)")
    p.add_argument("--reinit_words", nargs="*", default=[],
                   help="words whose text-encoder input embeddings are redrawn at the start; see reinit_word_embeddings")
    p.add_argument("--position_caption_prob", type=float, default=0.0,
                   help="share of one-object scenes captioned by their position alone ('in the top left corner')")
    p.add_argument("--timestep_bias_strategy", default="none", choices=["none", "later"],
                   help="'later' draws the last --timestep_bias_portion of timesteps --timestep_bias_multiplier "
                        "times as often (as diffusers' train_text_to_image_sdxl.py): where only the caption "
                        "can say where the object goes")
    p.add_argument("--timestep_bias_portion", type=float, default=0.25)
    p.add_argument("--timestep_bias_multiplier", type=float, default=3.0)
    p.add_argument("--restate_relations", action="store_true",
                   help="describe each two-object scene by any relation that holds, from either object")
    add_run_args(p, checkpointing_steps=1000)
    return p.parse_args(argv)


def build_text_encoder(args: argparse.Namespace, tokenizer) -> CLIPTextModel:
    """A small CLIP text transformer (causal self-attention, as Stable Diffusion's)."""
    vocab = tokenizer.get_vocab()
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=args.text_hidden_size, intermediate_size=4 * args.text_hidden_size,
        num_attention_heads=4, num_hidden_layers=args.text_layers, max_position_embeddings=args.max_length,
        pad_token_id=vocab["[PAD]"], bos_token_id=vocab["[BOS]"], eos_token_id=vocab["[EOS]"]))


def build_unet(args: argparse.Namespace, latent_size: int, latent_channels: int) -> UNet2DConditionModel:
    """The latent UNet: one level per ``--block_out_channels`` entry (16x16 -> 8x8 -> ...), cross-
    attention to the caption where ``--cross_attention`` says, and always in the middle block.

    The shipped model: 64/128/128 with cross-attention at 8x8 and in the 4x4 middle block.
    Measured on this 2-core CPU (batch 32, bf16 autocast, forward + backward): 0.33 s with
    cross-attention at 8x8 only, 0.43-0.56 s with it at 16x16 too.
    """
    levels = len(args.block_out_channels)
    if len(args.cross_attention) != levels:
        raise ValueError(f"--cross_attention needs one flag per level ({levels}), got {args.cross_attention}")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in args.cross_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(args.cross_attention))
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=tuple(args.block_out_channels), layers_per_block=1,
        cross_attention_dim=args.text_hidden_size, attention_head_dim=4, norm_num_groups=16,
        down_block_types=down, up_block_types=up,
    )


def make_noise_scheduler(beta_schedule: str = "linear", prediction_type: str = "v_prediction") -> DDPMScheduler:
    """T=1000, sampling timesteps spaced to start at t=T ("trailing").

    ``scaled_linear`` is Stable Diffusion's schedule (0.00085..0.012). It keeps
    sqrt(alpha_bar_T) = 0.068 of the image in x_T (0.086 at t=961, where 25 "leading" DDIM steps
    start), so in training the model reads the object's position off that leak, while sampling
    starts from pure noise: the first model of ``ldm-shapes`` placed objects at random
    (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Sec. 3).
    DDPM's ``linear`` schedule (1e-4..0.02) leaves sqrt(alpha_bar_T) = 0.0064, and "trailing"
    spacing makes every sampler start at t = T = 999, so position must come from the caption.

    That alone was not enough (2,000 fine-tuning steps left the objects' position independent of
    the caption): with epsilon prediction the loss weighs an error in x0 by SNR(t) (Ho et al. 2020,
    Eq. 14 vs. x0 error), about 1e-4 at the first sampling steps, exactly where only the caption can
    say where the object goes. v-prediction (Salimans & Ho 2022, Sec. 4) weighs it by 1 + SNR(t)
    (Lin et al. 2023 pair it with a zero-SNR end). Neither made a model that had learned to ignore
    the position words use them; ``--reinit_words`` and ``--timestep_bias_strategy`` did (README).
    """
    if beta_schedule == "scaled_linear":
        return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                             beta_end=0.012, clip_sample=False, prediction_type=prediction_type)
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         clip_sample=False, prediction_type=prediction_type, timestep_spacing="trailing")


def load_initial_weights(folder: Path, unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> None:
    """Start from a saved pipeline's UNet and text encoder (strict: the architectures must match)."""
    unet.load_state_dict(UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True).state_dict(),
                         strict=True)
    text_encoder.load_state_dict(
        CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True).state_dict(), strict=True)


def reinit_word_embeddings(text_encoder: CLIPTextModel, tokenizer, words: list[str], seed: int) -> None:
    """Redraw the input embeddings of ``words`` (at twice the embedding table's spread).

    Why: after the first ``ldm-shapes`` training, the text encoder's states for "top left" and
    "bottom right" had almost merged (a 2.4 difference on a norm of 10.5, against 15 for a colour
    change) while the UNet ignored them: neither side gave the other a gradient (measured: the
    gradient on the caption states carried no position signal above chance). Distinct random
    embeddings break that standstill: in a probe (the stage-1 model trained on t >= 800 only, half
    its captions position-only) the caption's position moved the first x0 guess (t = 999) by RMS
    0.63 after 1,500 steps, from 0.0009 (without redrawing, 200 steps on t >= 900 left it at 0.001).
    """
    table = text_encoder.get_input_embeddings().weight
    ids = tokenizer.convert_tokens_to_ids(words)
    unknown = [w for w, i in zip(words, ids, strict=True) if i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"--reinit_words not in the vocabulary: {', '.join(unknown)}")
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        table[ids] = torch.randn(len(ids), table.shape[1], generator=generator) * (2 * table.std())


def timestep_weights(args: argparse.Namespace, num_timesteps: int) -> torch.Tensor:
    """Relative probability of drawing each training timestep (uniform unless biased 'later')."""
    weights = torch.ones(num_timesteps)
    if args.timestep_bias_strategy == "later":
        weights[num_timesteps - int(args.timestep_bias_portion * num_timesteps):] *= args.timestep_bias_multiplier
    return weights / weights.sum()


def training_caption(scene: shapes.Scene, rng: np.random.Generator, position_only_prob: float,
                     restate_relations: bool = False) -> str:
    """A random wording of the scene's caption, or (one object, with ``position_only_prob``) its position alone.

    ``restate_relations``: a two-object scene is described by any relation that holds, from either object
    (:func:`diffusion.data.shapes.restate`), so every picture teaches both "left of" and "right of"."""
    if len(scene.objects) == 1 and position_only_prob > 0 and rng.random() < position_only_prob:
        return shapes.position_phrase(scene.objects[0].position, rng, terse=rng.random() < 0.5)
    if len(scene.objects) == 2 and restate_relations:
        scene = shapes.restate(scene, rng)
    return shapes.random_caption(scene, rng)


def bank_scenes(n: int, seed: int, two_object_prob: float) -> list[shapes.Scene]:
    """The bank's scenes: regenerated from the seed (fast), so only tensors are cached."""
    rng = np.random.default_rng(seed)
    return [shapes.random_scene(rng, two_object_prob) for _ in range(n)]


@torch.inference_mode()
def build_bank(vae: AutoencoderKL, scenes: list[shapes.Scene], batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode the rendered scenes: posterior mean and std (n, C, h, w)."""
    n = len(scenes)
    means, stds = [], []
    for i in range(0, n, batch):
        imgs = np.stack([shapes.render(s) for s in scenes[i:i + batch]])
        x = from_uint8(imgs)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
        if (i // batch) % 50 == 0:
            logger.info("encoded %d / %d scenes", i + len(imgs), n)
    return torch.cat(means), torch.cat(stds)


def export(args, accelerator, unet, text_encoder, ema_unet: EMAModel, ema_text: EMAModel, vae, tokenizer,
           scheduler: DDPMScheduler, step: int) -> Path:
    """Save the EMA weights as a StableDiffusionPipeline and draw a preview grid with the app's code."""
    unet_copy = UNet2DConditionModel.from_config(accelerator.unwrap_model(unet).config)
    unet_copy.load_state_dict(accelerator.unwrap_model(unet).state_dict(), strict=True)
    ema_unet.copy_to(unet_copy.parameters())
    text_copy = CLIPTextModel(accelerator.unwrap_model(text_encoder).config)
    text_copy.load_state_dict(accelerator.unwrap_model(text_encoder).state_dict(), strict=True)
    ema_text.copy_to(text_copy.parameters())
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_copy.eval(), tokenizer=tokenizer,
                                   unet=unet_copy.eval(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    out = args.output_dir / "pipeline"
    pipe.save_pretrained(out, safe_serialization=True)
    model = load_pipeline(local_card(out), torch.device("cpu"))
    rows = []
    for prompt in PREVIEW_PROMPTS:
        request = SampleRequest(sampler="ddim", steps=25, n=6, seed=0, prompt=prompt, guidance_scale=4.0)
        *_, last = latent_steps(model, request)
        rows.append(to_uint8(decode_latents(model, last.prev_sample)))
    iio.imwrite(args.output_dir / f"preview-{step:06d}.png", make_grid(np.concatenate(rows), ncols=6))
    return out


def main(args: argparse.Namespace) -> None:
    accelerator = setup_run(args)

    vae = AutoencoderKL.from_pretrained(args.vae, use_safetensors=True).eval().requires_grad_(False)
    scaling_factor = vae.config.scaling_factor
    scenes = bank_scenes(args.bank_size, args.seed, args.two_object_prob)
    bank_path = args.output_dir / f"bank-{args.bank_size}-{args.seed}-{args.two_object_prob:g}.safetensors"
    if bank_path.exists():
        bank = load_file(bank_path)
        means, stds = bank["means"], bank["stds"]
    else:
        means, stds = build_bank(vae, scenes)
        if accelerator.is_main_process:
            save_file({"means": means.contiguous(), "stds": stds.contiguous()}, bank_path)
    latent_channels, latent_size = means.shape[1], means.shape[-1]

    tokenizer = build_word_tokenizer(shapes.vocabulary(), model_max_length=args.max_length)
    text_encoder = build_text_encoder(args, tokenizer)
    unet = build_unet(args, latent_size, latent_channels)
    if args.init_from is not None:
        load_initial_weights(args.init_from, unet, text_encoder)
    if args.reinit_words:
        reinit_word_embeddings(text_encoder, tokenizer, args.reinit_words, args.seed)
    noise_scheduler = make_noise_scheduler(args.beta_schedule, args.prediction_type)
    t_weights = timestep_weights(args, noise_scheduler.config.num_train_timesteps)
    ema_unet = EMAModel(unet.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, power=0.75)
    ema_text = EMAModel(text_encoder.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, power=0.75)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=1e-2)
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps)
    unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, lr_scheduler)
    accelerator.register_for_checkpointing(ema_unet)
    accelerator.register_for_checkpointing(ema_text)

    ckpt_dir = args.output_dir / "checkpoints"
    global_step = resume(accelerator, ckpt_dir, args.resume, logger)
    if accelerator.is_main_process:
        save_args(args)
        logger.info("UNet parameters: %d, text encoder parameters: %d, bank %s, scaling factor %.5f",
                    sum(p.numel() for p in unet.parameters()), sum(p.numel() for p in text_encoder.parameters()),
                    tuple(means.shape), scaling_factor)

    rng = np.random.default_rng(args.seed * 7919 + accelerator.process_index * 104729 + global_step)
    gen = torch.Generator("cpu").manual_seed(args.seed + 1 + global_step)
    start, running = time.perf_counter(), 0.0
    unet.train()
    text_encoder.train()
    while global_step < args.max_train_steps:
        idx = rng.integers(len(scenes), size=args.train_batch_size)
        # Drop 10% of captions to "" so that one network learns eps(x, c) and eps(x, "") (CFG).
        captions = ["" if rng.random() < args.caption_dropout
                    else training_caption(scenes[i], rng, args.position_caption_prob, args.restate_relations)
                    for i in idx]
        ids = tokenizer(captions, padding="max_length", max_length=args.max_length, truncation=True,
                        return_tensors="pt").input_ids.to(accelerator.device)
        index = torch.from_numpy(idx)
        # z ~ q(z | x) = N(mean, std^2), scaled to unit variance (LDM App. G)
        latents = (means[index] + stds[index] * torch.randn(means[index].shape, generator=gen)) * scaling_factor
        latents = latents.to(accelerator.device)
        noise = torch.randn(latents.shape, generator=gen).to(accelerator.device)
        if args.timestep_bias_strategy == "none":
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        else:
            timesteps = torch.multinomial(t_weights, len(idx), replacement=True, generator=gen)
        timesteps = timesteps.to(accelerator.device)
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)  # q_sample, DDPM Eq. 4
        with accelerator.autocast():
            context = text_encoder(ids)[0]
            model_output = unet(noisy_latents, timesteps, encoder_hidden_states=context).sample
        # LDM Eq. 3: || eps - eps_theta(z_t, t, tau_theta(y)) ||^2, or with v-prediction the target
        # v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) z_0 (Salimans & Ho 2022, Eq. 13)
        target = noise if args.prediction_type == "epsilon" else \
            noise_scheduler.get_velocity(latents, noise, timesteps)
        loss = F.mse_loss(model_output.float(), target, reduction="none").mean(dim=(1, 2, 3))
        if args.snr_gamma > 0 and args.prediction_type == "epsilon":
            snr = compute_snr(noise_scheduler, timesteps)
            loss = loss * torch.clamp(snr, max=args.snr_gamma) / snr
        loss = loss.mean()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema_unet.step(unet.parameters())
        ema_text.step(text_encoder.parameters())
        global_step += 1
        running += loss.item()
        if global_step % args.logging_steps == 0 and accelerator.is_main_process:
            logger.info("step %d loss %.4f lr %.2e elapsed %.0fs", global_step, running / args.logging_steps,
                        lr_scheduler.get_last_lr()[0], time.perf_counter() - start)
            running = 0.0
        if (global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps) \
                and accelerator.is_main_process:
            path = save_checkpoint(accelerator, ckpt_dir, global_step, args.checkpoints_total_limit)
            export(args, accelerator, unet, text_encoder, ema_unet, ema_text, vae, tokenizer,
                   noise_scheduler, global_step)
            logger.info("checkpoint %s and EMA pipeline saved", path.name)
    accelerator.wait_for_everyone()
    logger.info("done: %d steps in %.0fs (this run)", global_step, time.perf_counter() - start)


if __name__ == "__main__":
    main(parse_args())
