"Data: shapes, reproducibility, the loaders' interface, and bad input."
import random
import pytest, torch, numpy as np
from sgd_callbacks.all import *
from sgd_callbacks.scratch import mse # the lesson's loss, which the star import leaves to fastai

def test_linear_data_shapes_and_ranges():
    x,y = linear_data(n=37, a=(1.5,-2.), noise=0., seed=3)
    assert x.shape == (37,2) and y.shape == (37,)
    assert torch.equal(x[:,1], torch.ones(37))
    assert (x[:,0] >= -1).all() and (x[:,0] < 1).all()
    assert torch.allclose(y, x@torch.tensor([1.5,-2.]))  # no noise: exactly the line

def test_linear_data_leaves_global_rng_alone():
    st = random.getstate(), torch.get_rng_state()
    a = linear_data(seed=7); b = linear_data(seed=7)
    assert all(torch.equal(u, v) for u,v in zip(a, b))
    assert random.getstate() == st[0] and torch.equal(torch.get_rng_state(), st[1])

@pytest.mark.parametrize('bs,n_batches', [(None,1), (1,80), (16,5), (30,3)])
def test_linear_dls_batches(bs, n_batches):
    dls = linear_dls(bs=bs)
    bs_ = [len(b[0]) for b in dls.train]
    assert len(bs_) == n_batches == len(dls.train) and sum(bs_) == 80
    assert sum(len(b[0]) for b in dls.valid) == 20

def test_same_seed_same_batches_whatever_the_global_rng():
    d1 = linear_dls(bs=8); random.seed(123); torch.manual_seed(123)
    d2 = linear_dls(bs=8)
    for _ in range(3):
        for (x1,y1),(x2,y2) in zip(list(d1.train), list(d2.train)): assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(next(iter(linear_dls(bs=8, seed=1).train))[0], next(iter(linear_dls(bs=8).train))[0])

def test_epochs_reshuffle_and_cover_every_row():
    dl = linear_dls(bs=8).train
    e0,e1 = [torch.cat([b[0] for b in dl]) for _ in range(2)]
    assert not torch.equal(e0, e1)
    assert torch.equal(e0[:,0].sort().values, e1[:,0].sort().values)

def test_split_is_disjoint_and_reproducible():
    dls = linear_dls()
    xt,xv = dls.train.dataset.tensors[0],dls.valid.dataset.tensors[0]
    x,_ = linear_data()
    assert len(xt) + len(xv) == 100
    assert torch.equal(torch.cat([xt,xv])[:,0].sort().values, x[:,0].sort().values)

def test_diabetes_dls():
    dls = diabetes_dls(bs=32)
    xb,yb = dls.one_batch()
    assert xb.shape == (32,11) and yb.shape == (32,)
    xt,yt = dls.train.dataset.tensors
    assert torch.allclose(xt[:,:10].mean(0), torch.zeros(10), atol=1e-5)
    assert torch.allclose(xt[:,:10].std(0), torch.ones(10), atol=1e-4)
    assert abs(yt.mean()) < 1e-5

def test_lstsq_is_the_optimum():
    x,y = linear_data(n=200, noise=0.3)
    a = lstsq_weights(x, y)
    loss = mse(x@a, y)
    for d in torch.eye(2)*1e-3: assert mse(x@(a+d), y) > loss and mse(x@(a-d), y) > loss

def test_loader_interface():
    dls = linear_dls(bs=16)
    assert dls.n_inp == 1 and dls.device is None
    dl = dls.train.new(shuffle=False)
    assert dl.seed == 42 and not dl.shuffle
    empty = dls.new_empty()
    assert len(empty.train.dataset) == 0

def test_random_states_are_fastais_without_waking_cuda():
    "`random_states` holds what fastai's `get_random_states` holds; CUDA's generators only once CUDA has started"
    from fastai.torch_core import get_random_states
    from sgd_callbacks.seeding import random_states
    a,b = get_random_states(),random_states()
    assert a.keys() == b.keys() and a['random_state'] == b['random_state'] and torch.equal(a['torch_state'], b['torch_state'])
    assert all(np.array_equal(x, y) for x,y in zip(a['numpy_state'], b['numpy_state']))
    assert len(b['torch_cuda_state']) == (len(a['torch_cuda_state']) if torch.cuda.is_initialized() else 0)
