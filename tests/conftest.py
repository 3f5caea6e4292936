"""Shared test setup.

- One intra-op thread (the machine has two cores and tests may run beside
  worker processes).
- SIGINT handled, not ignored: a shell starts background jobs (``cmd &``,
  ``nohup``) with SIGINT ignored, and an ignored signal stays ignored in
  every child process, so the Ctrl-C tests' subprocesses would never see
  it.  With a handler here, children start with the default disposition.
"""

import signal

import torch

torch.set_num_threads(1)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
