"""The lessons' texts: a course through DDPM (Ho et al. 2020) and latent diffusion (Rombach et al. 2022).

Each lesson is a short explanation with at most two equations (with the paper's equation numbers), a
question for the class and its answer. The live views that go with them are built by
:mod:`demo.tab_lessons`; the numbers quoted here come from this project's measurements, each with the
command that printed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from diffusion.studio import gate_figures


@dataclass(frozen=True)
class Lesson:
    title: str
    short: str  # the walkthrough's label
    text: str
    question: str
    answer: str
    #: a question asked before the result shows (predict, then reveal): Show me runs, the class predicts, the
    #: teacher reveals the result with a click
    predict: str | None = None


_LESSONS: tuple[Lesson, ...] = (
    Lesson(
        "1. The forward process",
        "Forward",
        r"""
Diffusion starts by **destroying** data. A fixed schedule $\beta_1, \dots, \beta_T$ adds a little Gaussian noise at
every step, and because Gaussians compose, any step can be reached in one jump:
$$q(x_t \mid x_0) = \mathcal N\big(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big),\qquad \bar\alpha_t = \prod_{s \le t} (1 - \beta_s)\quad\text{(Ho et al. 2020, Eq. 4)}.$$
$\bar\alpha_t$ is the fraction of signal *power* left; the signal-to-noise ratio is
$\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$. At $t = T$ nothing of the digit is left: $x_T$ is a standard Gaussian,
which is where sampling will start.
""",
        "At which t is the digit half gone, in the sense that signal and noise have equal power?",
        r"Where $\bar\alpha_t = 0.5$, so SNR = 1. On the linear schedule of the embedded DDPM that is near $t \approx 250$ "
        r"of 1,000 (the strip's note prints $\bar\alpha_t$ at each $t$): most of the 1,000 steps are spent at low SNR.",
    ),
    Lesson(
        "2. What the network learns (Algorithm 1)",
        "Learning",
        r"""
The network $\epsilon_\theta(x_t, t)$ never sees a clean image as its target. It is given a noisy image and asked which
noise was added, with the simple objective
$$L_\text{simple} = \mathbb E_{t, x_0, \epsilon}\,\big\lVert \epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\big)\big\rVert^2\quad\text{(Ho et al. 2020, Eq. 14)}.$$
From a noise estimate, a clean-image estimate follows: $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}$ (Ho et al. 2020, Eq. 15).
The view measures the embedded model's own error against $t$ on digits it **never trained on**, and shows its noise
and $\hat x_0$ at a few $t$. The Playground tab trains such a network live on 2-D points: its "Loss against t" view
is the same curve for a model you just trained.
""",
        "Where is denoising easy and where is it impossible, and why is predicting zero a useful yardstick?",
        r"Easy at large $t$: $x_t$ is almost pure noise, so $\epsilon \approx x_t$ and the error is near 0. Hardest at small "
        r"$t$: the noise is a faint film over the digit and must be told apart from the digit itself; predicting "
        r"$\epsilon_\theta = 0$ would score 1. The embedded DDPM still gets about half of it right at $t = 0$ (the view "
        r"prints the number), because MNIST's background is flat black and even faint noise shows on it. And the *image* "
        r"estimate $\hat x_0$ is best exactly there: at small $t$ a noise error costs little, as $\sqrt{1-\bar\alpha_t}$ is small.",
    ),
    Lesson(
        "3. Sampling, step by step (Algorithm 2)",
        "Sampling",
        r"""
Sampling runs the process backwards. Start from $x_T \sim \mathcal N(0, I)$ and for $t = T, \dots, 1$
$$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t, t)\Big) + \sigma_t z,\qquad z \sim \mathcal N(0, I)\quad\text{(Ho et al. 2020, Algorithm 2, Eq. 11)}.$$
Watch $\hat x_0$: early it is a blurry average of all digits (at low SNR the best guess is the mean), later it commits to
one digit and only sharpens. The equation below the strip is the exact update of one step, with that step's numbers
read off the diffusers scheduler.
""",
        "Why is the early $\\hat x_0$ blurry, even for a perfect network?",
        r"At low SNR many clean digits are consistent with the same $x_t$. A network trained with squared error predicts the "
        r"*mean* of all of them, $\mathbb E[x_0 \mid x_t]$, and a mean of different digits is a blur. As $t$ falls, fewer "
        r"digits remain consistent and the mean sharpens into one of them.",
    ),
    Lesson(
        "4. Fewer steps: DDIM and DPM-Solver++",
        "Fewer steps",
        r"""
The same trained network can be sampled with far fewer steps. DDIM (Song et al. 2021) takes deterministic jumps
between any two noise levels (Eq. 12, $\eta = 0$); DPM-Solver++ (Lu et al. 2022) treats sampling as an ODE and solves
it with a second-order method. The race aligns the samplers by **noise level**, not by step index.

Measured on the embedded DDPM (`python -m diffusion.bench`, 500 samples each, FLD against held-out digits, lower is
better; the floor, two real samples against each other, is 3.76):

| sampler | steps | FLD | time per image |
|---|---|---|---|
| DDIM | 10 | 10.35 | 56 ms |
| DDIM | 20 | 8.71 | 108 ms |
| DDIM | 50 | 7.52 | 286 ms |
| DPM-Solver++ 2M | 10 | 9.64 | 58 ms |
| DPM-Solver++ 2M | 20 | 7.92 | 115 ms |
""",
        "From 10 to 20 DDIM steps the FLD falls by 1.64, from 20 to 50 by only 1.19, and it stays far above the floor of "
        "3.76. Why do more steps help less and less?",
        r"Past some step count the discretisation error of the sampler is smaller than the network's own error: the "
        r"remaining gap to the floor is the model's, not the sampler's. More steps then only cost time.",
        predict="All four lanes start from the same noise $x_T$: DDPM with 1000 steps, DDIM with 50, DPM-Solver++ "
                "with 20 and Euler with 30. Will they all end on the same digit? If not, which lane will differ, and "
                "why?",
    ),
    Lesson(
        "5. Noise and determinism",
        "Determinism",
        r"""
Every random number in this app comes from one seeded generator, so **the same seed gives the same image**, bit for
bit. DDIM's $\eta$ interpolates between a deterministic ODE ($\eta = 0$: the start noise alone decides the image) and
DDPM-like sampling ($\eta = 1$: fresh noise $\sigma_t z$ at every step). Ho et al. (2020, Sec. 3.2) note that their
sampler, Algorithm 2, **resembles Langevin dynamics** with $\epsilon_\theta$ as a learned gradient of the data density,
which is why DDPM's particles jitter while DDIM's glide (see the Playground's "DDPM against DDIM paths").
""",
        "With the same seed, do DDIM at $\\eta = 0$ and at $\\eta = 1$ give the same digit? Why, or why not?",
        r"Usually not. Both start from the same $x_T$, but at $\eta = 1$ each step adds fresh noise drawn from the generator, "
        r"so the path, and often the digit, changes. At $\eta = 0$ the map from $x_T$ to the image is a deterministic function.",
    ),
    Lesson(
        "6. Latent space (LDM)",
        "Latent space",
        r"""
Latent diffusion (Rombach et al. 2022) runs the same process on a **compressed** image. An autoencoder maps
$x$ (64x64x3) to $z = \mathcal E(x)$ (16x16x4, downsampling factor $f = 4$) and back, $\tilde x = \mathcal D(z)$; the UNet
denoises $z$:
$$L_\text{LDM} = \mathbb E_{\mathcal E(x), \epsilon, t}\,\big\lVert \epsilon - \epsilon_\theta(z_t, t)\big\rVert^2\quad\text{(Rombach et al. 2022, Eq. 2)}.$$
Every step is cheaper because the tensor is 12 times smaller; the price is that no sample can be better than what the
decoder can draw. The view shows an image, its reconstruction $\mathcal D(\mathcal E(x))$ with its PSNR, the four latent
channels, and the measured cost of one UNet step of each embedded model. Then the choice of $f$ itself, as Rombach et
al. (Sec. 4.1) made it: the same image through autoencoders with $f = 1, 2, 4, 8$, and each factor's cost against the
best quality a latent model at that factor could reach.
""",
        "Where does the autoencoder lose detail, and why does that bound the whole model?",
        r"At sharp edges and fine texture: the reconstruction error sits on the outlines. Every sample passes through "
        r"$\mathcal D$, so nothing the decoder cannot reproduce can appear in a sample: this project measured the judge on "
        r"reconstructions (the autoencoder ceiling, shape [[ceiling.shape|.3f]]) above the model "
        r"([[single.shape|.3f]]).",
    ),
    Lesson(
        "7. Text conditioning",
        "Text",
        r"""
The prompt becomes tokens, the tokens become vectors (a text encoder), and the UNet reads them through
**cross-attention**: each latent position asks "which words concern me?",
$$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\Big(\frac{QK^\top}{\sqrt d}\Big) V,\quad Q = W_Q \varphi(z_t),\ K = W_K \tau_\theta(y),\ V = W_V \tau_\theta(y)$$
(Rombach et al. 2022, Sec. 3.3, an unnumbered equation; the attention of Vaswani et al. 2017, Eq. 1). The maps show,
per token, where the model looked at the last step. Words the tokenizer does not know are flagged: each becomes the one
[UNK] token, so the model sees that some unknown word stood there, never which.
""",
        "Why does the colour word's map light up on the object and not on the background?",
        r"Because during training, the colour word always co-occurred with pixels of that colour on the object: "
        r"cross-attention learned to route the word's vector to the positions it describes. The padding and end tokens "
        r"take the attention that no word claims.",
    ),
    Lesson(
        "8. Classifier-free guidance",
        "Guidance",
        r"""
One network, trained with the caption dropped 10% of the time, predicts both $\epsilon_\theta(z_t, \varnothing)$ and
$\epsilon_\theta(z_t, y)$. Guidance extrapolates from the first toward the second:
$$\tilde\epsilon = \epsilon_\theta(z_t, \varnothing) + w\,\big(\epsilon_\theta(z_t, y) - \epsilon_\theta(z_t, \varnothing)\big)\quad\text{(Ho \& Salimans 2022, Eq. 6)}.$$
This is the convention of diffusers and Stable Diffusion: the paper writes $(1+w)\,\epsilon_\theta(z_t, y) - w\,\epsilon_\theta(z_t, \varnothing)$,
so the paper's $w$ is this $w - 1$ ($w = 1$ here, $w = 0$ there: the plain conditional model). The view decomposes one step. In numbers (`python -m diffusion.metrics.shapes_gate`, 200 prompts, exact match of
colour, shape, size and position): $w = 1$: [[sweep.1.exact|.3f]], $w = 2$: [[sweep.2.exact|.3f]], $w = 4$:
[[sweep.4.exact|.3f]], $w = 7$: [[sweep.7.exact|.3f]]. On 200 prompts a difference of 0.02 is within sampling noise
(one standard error of an accuracy near 0.9 is about 0.02).
""",
        "Past $w = 1$, guidance makes pictures follow the prompt more closely (exact match [[sweep.1.exact|.3f]] at "
        "$w = 1$, [[sweep.4.exact|.3f]] at $w = 4$: about two standard errors apart). What does it cost?",
        r"Two UNet passes per step (conditional and unconditional), and diversity: large $w$ pushes every sample toward "
        r"the most typical image of the prompt, and past a point it stops paying: here $w = 7$ scores "
        r"[[sweep.7.exact|.3f]], no better than $w = 4$ within sampling noise.",
    ),
    Lesson(
        "9. Limits, honestly",
        "Limits",
        r"""
What the models cannot do is part of the lesson:
* **Composition.** 100 two-object prompts drawn by the plain model: both objects in [[pairs_layout_off.both|%]], the relation right in [[pairs_layout_off.relation|%]]
  (the same weak spot as Stable Diffusion's, scored 0.1-0.2 on spatial relations by T2I-CompBench). Lesson 10 shows
  why, and how a planned layout fixes much of it. Show me runs the plain model here.
* **Held-out pairs.** Colour-shape pairs never seen together in training reach [[held_out.exact|.2f]] exact match: the model composes
  words it saw only apart.
* **Memorisation.** A model can copy its training data. Show me puts 16 new digits beside their nearest training
  digits, and compares those distances with how far real digits the model never saw are from the training set.
* **What FLD measures.** The Fréchet distance between feature statistics of samples and real images (here a LeNet's
  features): it rewards matching the distribution, not any single image, and its floor (two real samples) is not 0.
""",
        "A model scores a perfect FLD by returning its training images. How would you catch it?",
        r"Compare each sample with its nearest training image and with the nearest *held-out* image: a copier is much "
        r"closer to the training set than to unseen data, while a model that generalises is about equally far from both. "
        r"FLD alone cannot tell, since copies have exactly the data's statistics.",
    ),
    Lesson(
        "10. Why two objects are hard, and how a layout fixes it",
        "Layout",
        r"""
The shapes model places **one** object exactly where its caption says, yet draws *a red circle left of a blue square*
wrong most of the time. Its three-layer text encoder does not bind word order to place: Show me runs the prompt with
the layout **off** and shows the cross-attention of each word (lesson 7's view). The maps of "red", "circle" and
"left" tend to land on the same object, wherever it is.

The fix splits the work, as LLM-grounded Diffusion does (Lian et al. 2023): first a **layout** (here a parser picks two
cells where the relation holds and a background; the seed chooses among them), then an image that follows it. Each
object gets its own single-object caption at its cell. For the first half of the steps the objects share one state,
whose conditional prediction is composed per pixel from the objects' predictions
(MultiDiffusion, Bar-Tal et al. 2023, Eq. 5):
$$\epsilon_c(x_t) = \sum_k W_k \odot \epsilon_\theta(x_t, y_k),\qquad \tilde\epsilon = \epsilon_\theta(x_t, \varnothing) + w\,\big(\epsilon_c - \epsilon_\theta(x_t, \varnothing)\big).$$
$W_k$ is 1 in object $k$'s soft region, and the objects share what lies outside. From the middle on, each object
finishes on its own trajectory: seeing the other object in $x_t$, a caption's prediction drifts its colour or
shape. Show me runs the same prompt and seed with the layout **on**: the regions, what each caption predicts, and
the result. On the gate's 100 two-object prompts (`python -m diffusion.metrics.shapes_gate --pairs-only`) the
relation goes from [[pairs_layout_off.relation|%]] right to [[pairs.relation|%]], for [[layout_cost.ratio|.1f]] times the
plain path's time.
""",
        "Composable Diffusion (Liu et al. 2022) *sums* the scores of two captions and composes CLEVR objects well. Why does "
        "summing \"a red circle on the left\" and \"a blue square on the right\" fail here?",
        r"Each of our single-object captions also says *nothing else is there*: the model was trained on scenes where the "
        r"caption lists every object. The two scores then fight: each pushes to erase the other's object. CLEVR captions describe one object among others, so their scores agree. Masking each caption's "
        r"prediction to its own region removes the fight: outside its region a caption has no say.",
        predict="First the layout is off: the plain model reads *a red circle left of a blue square*. In how many of "
                "the images will the circle really be left of the square? And which words' attention will land on "
                "the circle?",
    ),
)


_FIGURE = re.compile(r"\[\[([a-z_.0-9]+)\|([^\]]+)\]\]")


def fill(text: str, figures: dict[str, float]) -> str:
    """``text`` with every ``[[name|format]]`` replaced by the gate's figure (``%``: a whole percentage), or by
    "(not measured)" when the shipped model's gate file lacks it."""
    def one(match: re.Match) -> str:
        name, fmt = match.groups()
        if name not in figures:
            return "(not measured)"
        value = figures[name]
        return f"{round(100 * value)}%" if fmt == "%" else format(value, fmt)

    return _FIGURE.sub(one, text)


def lessons(figures: dict[str, float]) -> tuple[Lesson, ...]:
    """The lessons with the shipped model's measured figures filled in."""
    return tuple(replace(lesson, text=fill(lesson.text, figures), question=fill(lesson.question, figures),
                         answer=fill(lesson.answer, figures)) for lesson in _LESSONS)


#: Read once at start-up from the gate's file (diffusion.studio.gate_figures).
LESSONS: tuple[Lesson, ...] = lessons(gate_figures("ldm-shapes"))
