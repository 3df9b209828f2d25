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

def test_empty_and_scalars():
    assert all_finite([]) and all_finite([torch.tensor(1.)]) and not all_finite([torch.tensor(float('nan'))])

@pytest.mark.parametrize('step_cb', [ScratchSGD, ScratchStep])
@pytest.mark.parametrize('name', ['0.weight', '1.bias']) # the model's first tensor and its last
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_one_bad_value_stops_the_step_before_any_write(step_cb, name, bad):
    class Poison(Callback):
        order = ScratchSGD.order - 1
        def before_step(self):
            if self.iter == 1:
                dict(self.model.named_parameters())[name].grad.view(-1)[-1] = bad
                self.learn.before = copy.deepcopy(self.model.state_dict())
    torch.manual_seed(0)
    learn = Learner(linear_dls(bs=16), nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), loss_func=mse, lr=0.1,
                    opt_func=partial(SGD, mom=0.9), cbs=[step_cb(), Poison()])
    with learn.no_bar(), learn.no_logging():
        with pytest.raises(DivergedError, match=rf"non-finite gradient of parameter `{name}` at epoch 1/1, batch 2/5"): learn.fit(1)
    after = learn.model.state_dict()
    assert all(torch.equal(after[k], v) for k,v in learn.before.items()) # nothing written
    assert all(torch.isfinite(v).all() for v in after.values())
