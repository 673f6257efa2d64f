"""Diffusion that plans trajectories in a maze (Janner et al. 2022)."""
