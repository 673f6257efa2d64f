"""Quality metrics for the shipped models, computed with library code (torchmetrics)."""
