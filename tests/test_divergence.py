"The divergence check: one non-finite value anywhere stops the step before any weight is written; huge finite values do not."
import copy
import pytest, torch
from torch import nn
from fastai.basics import Learner, SGD, Callback, partial
from sgd_callbacks.all import *
from sgd_callbacks.divergence import all_finite
from sgd_callbacks.scratch import mse

@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
@pytest.mark.parametrize('where', [0, -1]) # the first tensor, the last
def test_all_finite_finds_one_value(bad, where):
    ts = [torch.ones(3, 4), torch.zeros(5), torch.full((2, 2), 7.)]
    assert all_finite(ts)
    ts[where].view(-1)[-1] = bad
    assert not all_finite(ts)

@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_huge_finite_values_are_finite(dtype):
    "Sums that overflow (in one tensor, or only across tensors) are confirmed element by element"
    big = torch.finfo(dtype).max
    assert all_finite([torch.full((4,), big, dtype=dtype)])
    assert all_finite([torch.full((1,), big, dtype=dtype), torch.full((1,), big, dtype=dtype)])
    assert all_finite([torch.tensor([big, -big], dtype=dtype)]) # a sum of 0, and no overflow on the way
    assert not all_finite([torch.tensor([float('inf'), -float('inf')], dtype=dtype)]) # their sum is NaN

@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
@pytest.mark.parametrize('where', [0, 1, 2, -1])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16])
def test_one_value_in_large_and_small_tensors(bad, where, dtype):
    "Tensors above and below the size where the check joins small ones before reducing, one value wrong in any of them"
    ts = [torch.randn(70, 80).to(dtype), torch.randn(3).to(dtype), torch.randn(9000).to(dtype), torch.tensor(2., dtype=dtype)]
    assert all_finite(ts)
    ts[where].view(-1)[ts[where].numel()//2] = bad
    assert not all_finite(ts)

def test_non_contiguous_and_mixed_dtypes():
    t = torch.randn(100, 90).t() # not contiguous: reduced without a copy
    assert all_finite([t, torch.ones(3, dtype=torch.float16), torch.ones(2, dtype=torch.bfloat16)])
    t[5, 7] = float('nan')
    assert not all_finite([t]) and not all_finite([torch.ones(3), torch.tensor([float('inf')], dtype=torch.float16)])

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_huge_finite_values_in_large_tensors(dtype):
    "A large tensor's sum of squares (or sum) overflows: confirmed element-wise, not divergence"
    big = torch.finfo(dtype).max
    assert all_finite([torch.full((5000,), big, dtype=dtype), torch.full((3,), big, dtype=dtype)])
    if dtype in (torch.float32, torch.float64): assert all_finite([torch.full((5000,), 1e20, dtype=dtype)]) # squares overflow float32
    t = torch.full((5000,), big, dtype=dtype); t[-1] = float('nan')
    assert not all_finite([t])

def test_empty_and_scalars():
    assert all_finite([]) and all_finite([torch.tensor(1.)]) and not all_finite([torch.tensor(float('nan'))])

@pytest.mark.parametrize('step_cb', [ScratchSGD, ScratchStep])
@pytest.mark.parametrize('name', ['0.weight', '0.bias', '1.bias']) # the model's first tensor (a large one), a small one, its last
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_one_bad_value_stops_the_step_before_any_write(step_cb, name, bad):
    class Poison(Callback):
        order = ScratchSGD.order - 1
        def before_step(self):
            if self.iter == 1:
                dict(self.model.named_parameters())[name].grad.view(-1)[-1] = bad
                self.learn.before = copy.deepcopy(self.model.state_dict())
    torch.manual_seed(0)
    learn = Learner(linear_dls(bs=16), nn.Sequential(nn.Linear(2, 2500), nn.Linear(2500, 1)), loss_func=mse, lr=0.1,
                    opt_func=partial(SGD, mom=0.9), cbs=[step_cb(), Poison()])
    with learn.no_bar(), learn.no_logging():
        with pytest.raises(DivergedError, match=rf"non-finite gradient of parameter `{name}` at epoch 1/1, batch 2/5"): learn.fit(1)
    after = learn.model.state_dict()
    assert all(torch.equal(after[k], v) for k,v in learn.before.items()) # nothing written
    assert all(torch.isfinite(v).all() for v in after.values())
