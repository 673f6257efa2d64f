"""The equations each tab explains, as Markdown with LaTeX."""

DDPM = r"""
### Denoising diffusion (Ho et al. 2020)
The **forward process** adds Gaussian noise with a fixed schedule $\beta_1,\dots,\beta_T$:
$$q(x_t \mid x_0) = \mathcal{N}\big(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,I\big),\qquad \bar\alpha_t=\prod_{s\le t}(1-\beta_s)$$

**Algorithm 1 (training).** Take a digit $x_0$, draw $t\sim\mathcal U\{1..T\}$ and $\epsilon\sim\mathcal N(0,I)$, and descend on
$$\big\lVert \epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\big)\big\rVert^2 .$$

**Algorithm 2 (sampling).** Start from $x_T\sim\mathcal N(0,I)$ and for $t=T,\dots,1$:
$$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t,t)\Big) + \sigma_t z,\qquad z\sim\mathcal N(0,I).$$

DDIM (Song et al. 2021) reuses the same network with fewer, deterministic steps ($\eta=0$);
DPM-Solver++ and Euler treat sampling as solving an ODE. The preview shows the model's
current guess of the clean image, $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}$.
"""

STEPS = r"""
### One reverse step at a time
Pick a step with the slider: the left image is $x_t$, the middle one the noise the network
predicts, $\epsilon_\theta(x_t,t)$, and the right one its estimate of the clean image,
$$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t,t)}{\sqrt{\bar\alpha_t}}\quad\text{(Ho et al. 2020, Eq. 15)}.$$
Early steps have little signal ($\bar\alpha_t\approx 0$), so $\hat x_0$ is a blurry average; late steps only refine detail.
"""

LDM = r"""
### Latent diffusion (Rombach et al. 2022)
An autoencoder $\mathcal E, \mathcal D$ compresses an image to a small latent $z=\mathcal E(x)$; the UNet
denoises **latents**, conditioned on the prompt $y$ through cross-attention on a text encoder's
output $\tau_\theta(y)$:
$$L_{LDM} = \mathbb E_{\mathcal E(x),\,y,\,\epsilon\sim\mathcal N(0,1),\,t}\Big[\big\lVert \epsilon - \epsilon_\theta\big(z_t, t, \tau_\theta(y)\big)\big\rVert_2^2\Big]\quad\text{(Rombach et al. 2022, Eq. 3)}.$$
**Classifier-free guidance** (Ho & Salimans 2022) mixes a conditional and an unconditional prediction,
$$\tilde\epsilon = \epsilon_\theta(z_t,\varnothing) + w\,\big(\epsilon_\theta(z_t,y)-\epsilon_\theta(z_t,\varnothing)\big),$$
where $w$ is the guidance scale (diffusers' convention: Ho & Salimans 2022, Eq. 6 writes the same with $w + 1$ in
place of $w$, so $w = 1$ here is the plain conditional model) and a negative prompt takes the place of $\varnothing$. The decoder
turns the final latent into pixels: $\hat x = \mathcal D(z_0)$.
"""

FORWARD = r"""
### The forward process on your image, and SDEdit
Any $x_t$ can be drawn in one shot from the clean image (Ho et al. 2020, Eq. 4):
$$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\qquad \epsilon\sim\mathcal N(0, I),$$
with one fixed noise draw per seed, so moving $t$ only changes the mix. **Denoise from here** runs
the reverse process from that $x_t$ (SDEdit, Meng et al. 2022): at small $t$ the model keeps your
image's content and cleans it up, at large $t$ it keeps only the coarse layout, or nothing, and
invents new content. For latent models all of this happens on the autoencoder's latents.
"""

GUIDANCE = r"""
### Classifier-free guidance, decomposed
At the chosen step the UNet made two predictions from the same $z_t$: one without the prompt,
$\epsilon_\theta(z_t,\varnothing)$, and one with it, $\epsilon_\theta(z_t,y)$. Guidance extrapolates along their
difference (Ho & Salimans 2022, Eq. 6, in the convention of diffusers and Stable Diffusion, where this $w$ is the
paper's $w + 1$: the paper writes $(1+w)\,\epsilon_\theta(z_t,y) - w\,\epsilon_\theta(z_t,\varnothing)$, so its $w = 0$ is our $w = 1$):
$$\tilde\epsilon_w = \epsilon_\theta(z_t,\varnothing) + w\,\big(\epsilon_\theta(z_t,y)-\epsilon_\theta(z_t,\varnothing)\big),\qquad
\hat x_0(w) = \frac{z_t - \sqrt{1-\bar\alpha_t}\,\tilde\epsilon_w}{\sqrt{\bar\alpha_t}}.$$
$w=0$ ignores the prompt, $w=1$ is the plain conditional model, larger $w$ pushes harder toward the prompt.
"""

ATTENTION = r"""
### Cross-attention: where each word acts
In every cross-attention layer of the UNet each latent position $i$ asks the prompt's tokens $j$ for
information (Rombach et al. 2022, Sec. 3.3; Vaswani et al. 2017, Eq. 1):
$$\mathrm{Attention}(Q,K,V) = \mathrm{softmax}\Big(\frac{QK^\top}{\sqrt d}\Big)V,\qquad Q = W_Q\,\varphi(z_t),\ K = W_K\,\tau_\theta(y),\ V = W_V\,\tau_\theta(y).$$
Each row of the softmax sums to 1 over the tokens. Below, one map per token: its attention
probabilities at the chosen step, averaged over heads and over the layers of the chosen resolution,
drawn over that step's predicted $\hat x_0$ (each map scaled to its own maximum). The label is the
token's share of all attention; the start and end tokens and the padding take their share too.
Move the step slider on the *Reverse process* tab (or press ← and →) to watch the words find their places.
"""

LAYOUT_VIEW = r"""
### Two objects by layout: one region per object
The shapes model draws single objects where their caption says, but its small text encoder does not bind
word order to place: in *a red circle left of a blue square* the words of both objects attend to one object.
With the layout switch on **auto**, a prompt that names two objects is planned first (a parser picks two
cells where the relation holds and a background; the seed chooses among them: the "LLM to layout" stage of
Lian et al. 2023). Each object then gets its own caption at its cell (*a red circle on the left on a white
background*). For the first half of the steps the objects share one $x_t$, whose conditional prediction is
composed per pixel (MultiDiffusion, Bar-Tal et al. 2023, Eq. 5):
$$\epsilon_c(x_t) = \sum_k W_k \odot \epsilon_\theta(x_t, y_k),\qquad W_k = M_k + \tfrac12\Big(1 - \sum_j M_j\Big),$$
with $M_k$ object $k$'s soft mask, then guided with the one unconditional prediction. From the middle on each
object follows its own trajectory (guided, then unguided for the last fifth), and the picture is their
composition with the same weights. Below, for the step chosen with the slider on the *Reverse process* tab:
each region, what its caption predicts, and the composed prediction.
"""

PLAYGROUND = r"""
### Algorithm 1, live: a diffusion model learns a 2-D point cloud
Every training step takes a batch of data points $x_0$, a random step $t$ and fresh noise $\epsilon$, makes
$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ (Ho et al. 2020, Eq. 4) and nudges the network to predict the noise:
$$\nabla_\theta \big\lVert \epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\big)\big\rVert^2\qquad\text{(Ho et al. 2020, Algorithm 1, Eq. 14)}.$$
The network is a small MLP with a sinusoidal embedding of $t$; the sampling below uses the same loop and the
same diffusers schedulers as the image models. **Quality** is the sliced Wasserstein distance between 2,000
sampled points and 2,000 fresh data points; two fresh samples of the data are already this far apart (the *floor*).
"""

SCORE = r"""
**The score reading.** A noise predictor is a score estimator: $\nabla_x \log q_t(x) \approx -\,\epsilon_\theta(x,t)/\sqrt{1-\bar\alpha_t}$
(Song & Ermon 2019; Ho et al. 2020, Sec. 3.2). The arrows point where the density grows: toward the data at small
$t$, toward the centre of a blurred blob at large $t$. Sampling follows these arrows, step by step, from noise to data.
"""

PATHS = r"""
**DDPM as a Markov chain.** Algorithm 2 adds fresh noise $\sigma_t z$ at every step, like Langevin dynamics on
the learned score: each particle jitters, and the same start ends in different places under different noise.
DDIM with $\eta = 0$ (Song et al. 2021, Eq. 12) adds none: it follows an ODE, smooth and deterministic.
"""

PLANNER = r"""
### Beyond images: a diffusion model that plans (Janner et al. 2022, "Planning with Diffusion")
A plan is a whole trajectory $\tau = (s_0, s_1, \dots, s_{H-1})$ of $H = 64$ positions, a two-channel 1-D signal.
The same Algorithm 1 trains a temporal U-Net (diffusers' `UNet1DModel`) on clear paths between random starts and
goals, noised as $\tau_t = \sqrt{\bar\alpha_t}\,\tau_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ (Ho et al. 2020, Eq. 4); like Diffuser's maze
planner it predicts the clean plan $\hat\tau_0$ rather than $\epsilon$ (each determines the other: Ho et al. 2020, Eq. 4).
To plan from $s$ to $g$, start from noise and run the reverse process, but after every step
write the known states back: $s_0 := s$, $s_{H-1} := g$. This is *inpainting* (Sec. 3.3): the network fills in
the waypoints between. The network is told which of the three layouts it is in, never where the walls are: it
learned where paths go from examples (none of them joins the pairs of cells the gate tests). Several samples for the same
$s$ and $g$ can take different routes. The plans are judged by a validator: a plan *collides* when one of its
segments meets a wall (crossed out in vermillion).
"""
