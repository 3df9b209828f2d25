"One rank of a DistributedDataParallel run of ScratchSGD on the lesson's data (launched by test_distributed.py)."
import sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from fastai.basics import Learner, Callback
from sgd_callbacks.all import *

torch.set_num_threads(1)
out = sys.argv[1]
dist.init_process_group('gloo')  # MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE come from the environment
rank,world = dist.get_rank(),dist.get_world_size()
dls = linear_dls(bs=16, seed=42)
dls.train.after_batch = lambda b: tuple(t[rank::world] for t in b)  # this rank's share of every global batch
class CountRows(Callback):
    "How many training rows this rank saw"
    def before_fit(self): self.n = 0
    def after_batch(self):
        if self.training: self.n += len(self.yb[0])
learn = scratch_learner(dls, DDP(LinearModel()), lr=0.1, mom=0.9, wd=0.1, cbs=CountRows())
with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(4)
torch.save(dict(a=learn.model.module.a.detach().clone(), rows=learn.count_rows.n), f"{out}/rank{rank}.pt")
dist.destroy_process_group()
