"""One run from config to summary: the loop, engine, optimizers, checkpoints, fine-tuning, DDP ranks, worker."""
