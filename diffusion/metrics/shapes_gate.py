"""The prompt gate of ``ldm-shapes``: generate images for fixed prompt lists and score them with the judge.

    python -m diffusion.metrics.shapes_gate [--quick]

Single-object prompts (every attribute stated), held-out colour-shape pairs, two-object prompts with a
relation, a guidance sweep, the autoencoder's ceiling and the prompt sensitivity at t = T. The judge
(:mod:`diffusion.metrics.shape_judge`) is validated on fresh renders first.
"""

from __future__ import annotations

import argparse

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffusion.data import shapes
from diffusion.metrics.cards import RESULTS_FILE, CardMetric, CardTask, provenance, write_results
from diffusion.metrics.shape_judge import (
    ATTRIBUTES,
    ShapeClassifier,
    load_classifier,
    score_pairs,
    score_single,
    validate,
)

# ----- the prompt gate -----
GATE_SEED = 2026  # the fixed prompt lists
TARGETS = {"colour": 0.95, "shape": 0.90, "size": 0.90, "position": 0.90, "exact": 0.80}
#: Two-object prompts, drawn by layout (the default): both objects with the right colour and shape, the relation right.
PAIR_TARGETS = {"both": 0.90, "relation": 0.90}


@dataclass(frozen=True)
class GateConfig:
    """What the gate generates: prompt counts, sampler, steps, guidance and the sweep."""

    n_prompts: int = 200
    n_held_out: int = 100
    n_pairs: int = 100
    guidance: float = 4.0
    sweep: tuple[float, ...] = (1.0, 2.0, 4.0, 7.0)
    sampler: str = "ddim"
    steps: int = 25
    seed: int = 0
    batch: int = 50
    attend_excite: bool = False  # Attend-and-Excite while sampling (diffusion.excite)
    layout: str = "auto"  # two-object prompts drawn by a planned layout ("auto") or by the plain model ("off")


@dataclass
class ShapesGateReport:
    """Scores of one gate run (accuracies in [0, 1])."""

    config: GateConfig
    single: dict[str, float]
    held_out: dict[str, float] | None
    pairs: dict[str, float] | None
    sweep: dict[float, dict[str, float]]
    wall_s: float
    ceiling: dict[str, float] | None = None  # the judge on autoencoder reconstructions of the same scenes
    pair_ceiling: dict[str, float] | None = None  # the same for the two-object scenes
    by_relation: dict[str, dict[str, float]] | None = None  # the two-object scores of each relation's prompts

    def passes(self) -> bool:
        """The single-object targets (when single prompts were run)."""
        return all(self.single[k] >= v for k, v in TARGETS.items()) if self.single else True

    def pairs_pass(self) -> bool | None:
        """The two-object targets (None when no two-object prompts were run)."""
        return None if self.pairs is None else all(self.pairs[k] >= v for k, v in PAIR_TARGETS.items())


def generate(model, prompts: Sequence[str], guidance: float, config: GateConfig) -> np.ndarray:
    """uint8 images (N, H, W, 3), one per prompt, with the app's own sampling code."""
    from diffusion.images import to_uint8
    from diffusion.pipeline import decode_latents, latent_steps
    from diffusion.request import SampleRequest

    out = []
    for i in range(0, len(prompts), config.batch):
        chunk = list(prompts[i:i + config.batch])
        request = SampleRequest(sampler=config.sampler, steps=config.steps, n=len(chunk),
                                seed=config.seed + i, guidance_scale=guidance, attend_excite=config.attend_excite,
                                layout=config.layout)
        *_, last = latent_steps(model, request, prompts=chunk)
        out.append(to_uint8(decode_latents(model, last.prev_sample)))
    return np.concatenate(out)


# Two prompt pairs that differ only in position, or in colour, size and shape (the same seeds).
SENSITIVITY_PAIRS = {
    "position": ("a large red circle in the top left corner", "a large red circle in the bottom right corner"),
    "colour, size and shape": ("a large red circle in the top left corner", "a small blue square in the top left corner"),
}


@torch.inference_mode()
def prompt_sensitivity(model, a: str, b: str, timestep: int = 999, n: int = 8, seed: int = 0) -> float:
    """How much the caption moves the model's first guess: the RMS difference of the predicted x0
    (latent space, DDPM Eq. 15) between prompts ``a`` and ``b`` at ``timestep``, on the same n noises.

    At t = T the image is all noise, so only the caption can say where the object goes; a model
    whose "position" figure is near 0 places objects by the noise alone.
    """
    from diffusion.loop import predict_original_sample
    from diffusion.pipeline import sample_noise
    from diffusion.prompts import encode_prompt
    from diffusion.request import make_generator
    from diffusion.schedulers import make_scheduler

    scheduler = make_scheduler("ddpm", model.scheduler_config)
    size = model.card.resolution // model.vae_scale_factor
    x = sample_noise((n, model.unet.config.in_channels, size, size), make_generator(seed), model.device, model.dtype)
    t = torch.tensor(timestep)
    x0 = [predict_original_sample(scheduler, x, model.unet(x, t, encoder_hidden_states=encode_prompt(model, [p] * n))
                                  .sample.float(), timestep) for p in (a, b)]
    return float((x0[0] - x0[1]).pow(2).mean().sqrt())


def layout_cost(model, prompt: str = "a red circle left of a blue square", n: int = 4, repeats: int = 5,
                config: GateConfig = GateConfig()) -> dict[str, float]:
    """Median wall seconds of ``n`` images for a two-object prompt with the layout off and on (interleaved runs
    in one process, after one warm-up each), and their ratio: what drawing by layout costs."""
    import statistics
    import time
    from dataclasses import replace

    times: dict[str, list[float]] = {"off": [], "auto": []}
    for k in range(repeats + 1):
        for mode in times:
            start = time.perf_counter()
            generate(model, [prompt] * n, config.guidance, replace(config, layout=mode, seed=k))
            if k:  # the first round warms up
                times[mode].append(time.perf_counter() - start)
    off, auto = statistics.median(times["off"]), statistics.median(times["auto"])
    return {"off_s": off, "auto_s": auto, "ratio": auto / off}


@torch.inference_mode()
def reconstructions(model, scenes: Sequence[shapes.Scene], batch: int = 50) -> np.ndarray:
    """uint8 decode(mean of q(z | x)) of the rendered scenes through the model's own autoencoder."""
    from diffusion.images import from_uint8, to_uint8

    vae = model.vae
    out = []
    for i in range(0, len(scenes), batch):
        x = from_uint8(np.stack([shapes.render(s) for s in scenes[i:i + batch]])).to(model.device, vae.dtype)
        out.append(to_uint8(vae.decode(vae.encode(x).latent_dist.mode()).sample))
    return np.concatenate(out)


def autoencoder_ceiling(model, scenes: Sequence[shapes.Scene], classifier: ShapeClassifier,
                        batch: int = 50) -> dict[str, float]:
    """The judge on the model's own autoencoder reconstructions of the rendered single-object scenes:
    what a perfect latent model could score, since every sample is decoded."""
    return score_single(reconstructions(model, scenes, batch), scenes, classifier).accuracy()


def pair_ceiling(model, scenes: Sequence[shapes.Scene], classifier: ShapeClassifier,
                 batch: int = 50) -> dict[str, float]:
    """The same ceiling for two-object scenes (both objects found, relation right)."""
    return score_pairs(reconstructions(model, scenes, batch), scenes, classifier).accuracy()


def single_prompts(n: int, held_out: str = "exclude") -> list[shapes.Scene]:
    """The gate's fixed single-object scenes (every attribute stated in the prompt)."""
    return shapes.gate_prompts(n, GATE_SEED if held_out == "exclude" else GATE_SEED + 1, held_out)


def pair_prompts(n: int) -> list[shapes.Scene]:
    rng = np.random.default_rng(GATE_SEED + 2)
    return [shapes.random_two_object_scene(rng, "white") for _ in range(n)]


def run_gate(model, classifier: ShapeClassifier, config: GateConfig = GateConfig()) -> ShapesGateReport:
    """Generate for the fixed prompt lists and score them (single, held-out pairs, two objects, sweep)."""
    import time

    start = time.perf_counter()
    scenes = single_prompts(config.n_prompts)
    prompts = [shapes.full_caption(s.objects[0]) for s in scenes]
    sweep: dict[float, dict[str, float]] = {}
    for w in sorted(set(config.sweep) | {config.guidance}) if config.n_prompts else ():
        sweep[w] = score_single(generate(model, prompts, w, config), scenes, classifier).accuracy()
    held = pairs = two_ceiling = by_relation = None
    if config.n_held_out:
        held_scenes = single_prompts(config.n_held_out, held_out="only")
        images = generate(model, [shapes.full_caption(s.objects[0]) for s in held_scenes], config.guidance, config)
        held = score_single(images, held_scenes, classifier).accuracy()
    if config.n_pairs:
        pair_scenes = pair_prompts(config.n_pairs)
        images = generate(model, [shapes.two_object_caption(s) for s in pair_scenes], config.guidance, config)
        pairs = score_pairs(images, pair_scenes, classifier).accuracy()
        by_relation = {}
        for relation in shapes.RELATIONS:
            keep = [i for i, s in enumerate(pair_scenes) if s.relation == relation]
            if keep:
                by_relation[relation] = score_pairs(images[keep], [pair_scenes[i] for i in keep], classifier).accuracy()
                by_relation[relation]["n"] = len(keep)
        two_ceiling = pair_ceiling(model, pair_scenes, classifier)
    ceiling = autoencoder_ceiling(model, scenes, classifier) if scenes else None
    return ShapesGateReport(config, sweep.get(config.guidance, {}), held, pairs,
                            {w: sweep[w] for w in config.sweep if w in sweep}, time.perf_counter() - start, ceiling,
                            two_ceiling, by_relation)




def results_record(report: ShapesGateReport, plain_pairs: dict[str, float] | None = None,
                   cost: dict[str, float] | None = None) -> dict:
    """The gate's figures as plain JSON: what every lesson, card and document quotes about the shipped model.
    ``plain_pairs``: the two-object scores with the layout off; ``cost``: :func:`layout_cost`."""
    def rounded(acc: dict[str, float] | None) -> dict[str, float] | None:
        return None if acc is None else {k: round(float(v), 4) for k, v in acc.items()}

    c = report.config
    return {
        "model": "ldm-shapes",
        **provenance("diffusion-classroom-gate-shapes --write"),
        "config": {"sampler": c.sampler, "steps": c.steps, "guidance": c.guidance, "seed": c.seed,
                   "prompts": c.n_prompts, "held_out": c.n_held_out, "pairs": c.n_pairs, "layout": c.layout},
        "single": rounded(report.single), "held_out": rounded(report.held_out), "ceiling": rounded(report.ceiling),
        "pairs": rounded(report.pairs), "pair_ceiling": rounded(report.pair_ceiling),
        "pairs_by_relation": {k: rounded(v) for k, v in (report.by_relation or {}).items()},
        "pairs_layout_off": rounded(plain_pairs),
        "sweep": {format(w, "g"): rounded(acc) for w, acc in report.sweep.items()},
        "layout_cost": None if cost is None else {k: round(float(v), 3) for k, v in cost.items()},
    }


#: The card's model-index rows (results path, metric name) of the gate's figures.
CARD_METRICS = (CardMetric("single.exact", "single objects: colour, shape, size and position all right"),
                CardMetric("held_out.exact", "held-out colour-shape pairs: all attributes right"),
                CardMetric("pairs.both", "two objects (drawn by layout): both right"),
                CardMetric("pairs.relation", "two objects (drawn by layout): relation right"),
                CardMetric("pairs_layout_off.both", "two objects, plain pipeline: both right"),
                CardMetric("pairs_layout_off.relation", "two objects, plain pipeline: relation right"))


#: What the card's rows measure.
CARD_TASK = CardTask("text-to-image", "synthetic-shapes", "shapes prompt gate (diffusion/metrics/shapes_gate.py)")


def write_card_results(folder: Path, record: dict) -> Path:
    """The results file and the card's model-index (:func:`diffusion.metrics.cards.write_results`)."""
    c = record["config"]
    return write_results(folder, record, CARD_TASK, CARD_METRICS,
                         {"sampler": c["sampler"], "steps": c["steps"], "guidance": c["guidance"]})


def format_report(report: ShapesGateReport, judge: tuple[dict[str, float], dict[str, float]] | None = None) -> str:
    """A plain-text table of the gate (what the CLI prints and the README quotes)."""
    c = report.config
    lines = []
    if judge is not None:
        single, two = judge
        lines.append("Judge on fresh renders: " + ", ".join(f"{k} {v:.3f}" for k, v in single.items())
                     + " | two objects: " + ", ".join(f"{k} {v:.3f}" for k, v in two.items()))
    head = f"{'':28s}" + "".join(f"{k:>10s}" for k in (*ATTRIBUTES, "exact"))
    lines.append(f"{c.sampler.upper()} {c.steps} steps, guidance {c.guidance:g}, seed {c.seed}, layout {c.layout}"
                 + (", Attend-and-Excite" if c.attend_excite else ""))
    if report.single or report.held_out is not None:
        lines.append(head)

    def row(name: str, acc: dict[str, float]) -> str:
        return f"{name:28s}" + "".join(f"{acc[k]:10.3f}" for k in (*ATTRIBUTES, "exact"))

    if report.single:
        lines.append(row(f"{c.n_prompts} prompts", report.single))
        lines.append(row("target", TARGETS))
    if report.ceiling is not None:
        lines.append(row("autoencoder ceiling", report.ceiling))
    if report.held_out is not None:
        lines.append(row(f"{c.n_held_out} held-out pairs", report.held_out))

    def pair_row(name: str, acc: dict[str, float]) -> str:
        return f"{name:28s}" + "".join(f"{acc[k]:10.3f}" if k in acc else f"{'':10s}"
                                       for k in ("first", "second", "both", "relation"))

    if report.pairs is not None:
        lines.append(f"{'':28s}" + "".join(f"{k:>10s}" for k in ("first", "second", "both", "relation")))
        lines.append(pair_row(f"{c.n_pairs} two-object prompts", report.pairs))
        lines.append(pair_row("target", PAIR_TARGETS))
        if report.pair_ceiling is not None:
            lines.append(pair_row("autoencoder ceiling", report.pair_ceiling))
        for relation, acc in (report.by_relation or {}).items():
            lines.append(pair_row(f"  {relation} ({acc['n']:.0f} prompts)", acc))
    if report.sweep:
        lines.append("Guidance sweep (exact match on the prompts above):")
        lines.append("  " + "".join(f"{'w=' + format(w, 'g'):>8s}" for w in report.sweep))
        lines.append("  " + "".join(f"{acc['exact']:8.3f}" for acc in report.sweep.values()))
    verdicts = []
    if report.single:
        verdicts.append(f"single objects {'PASS' if report.passes() else 'FAIL'}")
    if report.pairs is not None:
        verdicts.append(f"two objects {'PASS' if report.pairs_pass() else 'FAIL'}")
    lines.append(f"gate: {', '.join(verdicts)} ({report.wall_s:.0f} s)")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The command line of ``diffusion-classroom-gate-shapes`` (``python -m diffusion.metrics.shapes_gate``)."""
    from diffusion import __version__

    p = argparse.ArgumentParser(prog="diffusion-classroom-gate-shapes",
                                description="Quality gate of the latent shapes model")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--model-dir", type=Path, default=None, help="default: the embedded ldm-shapes")
    p.add_argument("--quick", action="store_true", help="40 prompts, 20 held-out, 20 two-object")
    p.add_argument("--pairs-only", action="store_true", help="only the two-object prompts (and their ceiling)")
    p.add_argument("--attend-excite", action="store_true", help="sample with Attend-and-Excite")
    p.add_argument("--layout", choices=("auto", "off"), default="auto",
                   help="two-object prompts drawn by a planned layout (auto) or by the plain model (off)")
    p.add_argument("--write", action="store_true",
                   help=f"also score the two-object prompts with the layout off, time the layout, and write every figure "
                        f"to MODEL_DIR/{RESULTS_FILE} (which the lessons and the model card read)")
    p.add_argument("--cost", action="store_true",
                   help="also time 4 images of a two-object prompt with the layout off and on")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, else CPU), cpu, cuda, mps")
    return p


def main(argv: list[str] | None = None) -> int:
    """``diffusion-classroom-gate-shapes [--quick]``: validate the judge, run the gate, print."""
    import dataclasses
    import logging

    from diffusion.loading import choose_device, load_pipeline
    from diffusion.registry import Registry, local_card

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    card = local_card(args.model_dir) if args.model_dir else Registry.default().get("ldm-shapes")
    model = load_pipeline(card, choose_device(args.device))
    classifier = load_classifier()
    config = GateConfig(n_prompts=40, n_held_out=20, n_pairs=20) if args.quick else GateConfig()
    if args.pairs_only:
        config = dataclasses.replace(config, n_prompts=0, n_held_out=0, sweep=())
    config = dataclasses.replace(config, attend_excite=args.attend_excite, layout=args.layout)
    judge = validate(classifier)
    report = run_gate(model, classifier, config)
    lines = [format_report(report, judge)]
    if not args.pairs_only:
        sensitivity = {k: prompt_sensitivity(model, a, b) for k, (a, b) in SENSITIVITY_PAIRS.items()}
        lines.append("Prompt sensitivity at t = 999 (RMS change of the predicted x0 between two prompts): "
                     + ", ".join(f"{k} {v:.4f}" for k, v in sensitivity.items()))
    cost = layout_cost(model, config=config) if args.cost or args.write else None
    if args.write:
        plain = dataclasses.replace(config, layout="off", n_prompts=0, n_held_out=0, sweep=())
        plain_pairs = run_gate(model, classifier, plain).pairs
        record = results_record(report, plain_pairs, cost)
        target = write_card_results(Path(args.model_dir or card.source), record)
        lines.append(f"Wrote {target} and the model-index of {target.parent / 'README.md'}")
    if cost is not None:
        lines.append(f"Layout cost, 4 images, {config.sampler.upper()} {config.steps}: off {cost['off_s']:.2f} s, "
                     f"auto {cost['auto_s']:.2f} s, ratio {cost['ratio']:.2f} (median of 5)")
    print("\n".join(lines))  # noqa: T201 - the command's output
    return 0 if report.passes() and report.pairs_pass() is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())

