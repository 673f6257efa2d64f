"""The step lab's views over one model: trajectories, the sampler race, the forward process, schedules."""
