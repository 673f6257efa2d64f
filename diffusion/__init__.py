"""Diffusion Classroom's shared model module: schedules, the sampling loop, the model
registry and loading, data, training and metrics. It never imports gradio."""
