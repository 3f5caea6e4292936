"""Shared test setup: one intra-op thread (the machine has two cores and
tests may run beside worker processes)."""

import torch

torch.set_num_threads(1)
