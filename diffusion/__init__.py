"""Diffusion Classroom's shared model module: schedules, the sampling loop, the model
registry and loading, data, training and metrics. It never imports gradio.

The app's one version lives here (``pyproject.toml`` reads it): the footer, every ``--version`` and every
recipe show it.
"""

__version__ = "1.0.0"
