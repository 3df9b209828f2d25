import os
os.environ.setdefault('MPLBACKEND', 'Agg')
import matplotlib
matplotlib.use('Agg')
import torch
# at most two torch threads, shared among pytest-xdist's workers (pyproject.toml): two workers on two cores take one each
_workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1))
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _workers))
