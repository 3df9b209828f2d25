"One rank of a 2-process run under `learn.ddp_ctx()` (launched by test_distributed.py): `ddp_train.py MODE OUT`."
import sys, traceback, torch
from torch import nn
from fastai.basics import *
from sgd_callbacks.all import *

torch.set_num_threads(1)
mode,out = sys.argv[1],sys.argv[2]
rank,world,_ = ddp_env()

class Seen(Callback):
    "The training batches this rank trained on (its share, after the loader's transforms), and their row count"
    order = DDPShard.order+1
    def before_fit(self): self.n,self.xs = 0,[]
    def before_batch(self):
        if not self.training: return
        self.n += len(self.yb[0])
        if len(self.xs) < 2: self.xs.append(self.xb[0].as_subclass(torch.Tensor).detach().clone())

class Boom(Callback):
    "Fail on rank 1 only, in the middle of the first epoch"
    def after_batch(self):
        if rank == 1 and self.iter == 2: raise RuntimeError("boom on rank 1")

def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8,10))

seen = Seen()
if mode == 'lesson': learn = scratch_learner(linear_dls(bs=16, seed=42), LinearModel(), lr=0.1, mom=0.9, wd=0.1, cbs=seen)
elif mode == 'digits':
    learn = scratch_learner(digits_dls(size=8, bs=32, seed=42), small_cnn(), lr=0.1, mom=0.9, loss_func=CrossEntropyLossFlat(), cbs=seen)
elif mode == 'diverge': learn = scratch_learner(linear_dls(bs=16, seed=42), LinearModel(), lr=1e4)
elif mode == 'fail1': learn = scratch_learner(linear_dls(bs=16, seed=42), LinearModel(), lr=0.1, cbs=Boom())
try:
    with learn.ddp_ctx(timeout=60), learn.no_bar(), learn.no_logging():
        if mode == 'digits': learn.fit(1)
        else: learn.fit_one_cycle(4)
except Exception as e:
    with open(f"{out}/rank{rank}.err", 'w') as f: f.write(f"{type(e).__name__}: {e}")
    raise
torch.save(dict(sd={k: v.clone() for k,v in learn.model.state_dict().items()}, rows=seen.n, xs=seen.xs,
                valid=[float(v) for v in learn.validate()]), f"{out}/rank{rank}.pt")
# Done: meet the other rank, close the group and leave without the interpreter's teardown, which can abort a rank with
# SIGABRT once DDP has run (51_distributed, "Leaving the process"); a rank that raised above exits as usual
import os, torch.distributed as dist
dist.barrier(); dist.destroy_process_group()
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
