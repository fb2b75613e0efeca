"""What one compiled training step does: the steps and their state (``steps``), what a step
minimises (``objective``), optimisers and schedules (``optim``), online augmentation and
mixup/CutMix inside the step, and the test-time views the evaluation steps run."""
