"ScratchSGD: properties of one step against fastai's steppers, and parity across whole fits."
import copy, itertools
import pytest, torch
from torch import nn
from hypothesis import given, settings, strategies as st
from fastai.basics import Learner, SGD, Adam, RMSProp, OptimWrapper, Callback, partial
import fastai.callback.schedule
from sgd_callbacks.all import *
from sgd_callbacks.scratch import mse # the lesson's loss, which the star import leaves to fastai

shapes = st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3), min_size=1, max_size=4)
lrs = st.floats(1e-4, 10., allow_nan=False)
moms = st.sampled_from([0.]) | st.floats(0.01, 0.99)
wds = st.sampled_from([0.]) | st.floats(1e-4, 1.)

@settings(max_examples=150, deadline=None)
@given(shapes, lrs, moms, wds, st.booleans(), st.booleans(), st.integers(0, 2**31))
def test_one_step_matches_fastai_steppers(shapes, lr, mom, wd, decouple_wd, foreach, seed):
    "Three steps of `sgd_update` (as ScratchSGD calls it) equal fastai `SGD.step` bit for bit."
    g = torch.Generator().manual_seed(seed)
    ref = [nn.Parameter(torch.randn(tuple(s), generator=g)) for s in shapes]
    ours = [nn.Parameter(p.detach().clone()) for p in ref]
    opt = SGD(ref, lr, mom=mom, wd=wd, decouple_wd=decouple_wd)
    bufs = [torch.zeros_like(p) for p in ours] if mom else None
    for _ in range(3):
        grads = [torch.randn(tuple(s), generator=g) for s in shapes]
        for p,gr in zip(ref, grads): p.grad = gr.clone()
        opt.step()
        gs = [gr.clone() for gr in grads]
        with torch.no_grad():
            if foreach: sgd_update(ours, gs, lr, wd, decouple_wd, mom, bufs)
            else:
                for i,(p,gr) in enumerate(zip(ours, gs)): sgd_update([p], [gr], lr, wd, decouple_wd, mom, None if bufs is None else [bufs[i]])
    assert all(torch.equal(a, b) for a,b in zip(ref, ours))

def fit_pair(mom, wd, dec, sched, bs=16, epochs=3, foreach=None):
    m0 = LinearModel()
    ref = Learner(linear_dls(bs=bs), copy.deepcopy(m0), loss_func=mse, lr=0.1, cbs=EpochShuffle(),
                  opt_func=partial(SGD, mom=mom, wd=wd, decouple_wd=dec))
    scr = scratch_learner(linear_dls(bs=bs), copy.deepcopy(m0), lr=0.1, mom=mom, wd=wd, decouple_wd=dec, foreach=foreach)
    for l in (ref, scr):
        with l.no_bar(), l.no_logging(): getattr(l, sched)(epochs)
    return ref, scr

@pytest.mark.parametrize('mom,wd,dec,sched', list(itertools.product((0.,0.9), (0.,0.1), (True,False), ('fit','fit_one_cycle'))))
def test_parity_with_fastai_sgd(mom, wd, dec, sched):
    ref,scr = fit_pair(mom, wd, dec, sched)
    assert same_weights(ref.model, scr.model)
    assert not same_weights(scr.model, LinearModel())

@pytest.mark.parametrize('foreach', [True, False])
def test_both_strategies_are_bit_identical(foreach):
    ref,scr = fit_pair(0.9, 0.1, True, 'fit_one_cycle', foreach=foreach)
    assert same_weights(ref.model, scr.model)

@pytest.mark.parametrize('mom,wd', list(itertools.product((0.,0.9), (0.,0.1))))
def test_parity_with_torch_sgd(mom, wd):
    m0 = LinearModel()
    tor = Learner(linear_dls(bs=16), copy.deepcopy(m0), loss_func=mse, lr=0.1, cbs=EpochShuffle(),
                  opt_func=partial(OptimWrapper, opt=partial(torch.optim.SGD, momentum=mom, weight_decay=wd)))
    scr = scratch_learner(linear_dls(bs=16), copy.deepcopy(m0), lr=0.1, mom=mom, wd=wd, decouple_wd=False)
    for l in (tor, scr):
        with l.no_bar(), l.no_logging(): l.fit(3, wd=wd)
    assert same_weights(tor.model, scr.model)

def test_plain_loop_matches_learner_on_full_batch():
    dls = linear_dls(bs=None)
    learn = scratch_learner(dls, LinearModel(), lr=0.1, mom=0.9, wd=0.01)
    with learn.no_bar(), learn.no_logging(): learn.fit(50)
    h = fit_scratch(*dls.train.dataset.tensors, (-1.,1.), lr=0.1, epochs=50, mom=0.9, wd=0.01)
    assert torch.equal(learn.model.a.data, h.model.a.data)

class Trail(Callback):
    "The weights after every training step"
    order = 100
    def before_fit(self): self.ws = []
    def after_batch(self):
        if self.training: self.ws.append(self.model.a.detach().clone())

def test_lr_find_drives_the_scratch_step():
    "lr_find's steps are ScratchSGD's: the weights of every step equal fastai's SGD under lr_find, and moved"
    runs = []
    for scratch in (False, True):
        tr = Trail()
        if scratch: learn = scratch_learner(linear_dls(bs=16), LinearModel(), lr=0.1, cbs=[tr])
        else: learn = Learner(linear_dls(bs=16), LinearModel(), loss_func=mse, lr=0.1, opt_func=partial(SGD, mom=0.), cbs=[EpochShuffle(), tr])
        a0 = learn.model.a.data.clone()
        with learn.no_bar(), learn.no_logging(): res = learn.lr_find(num_it=20, show_plot=False)
        assert torch.equal(learn.model.a.data, a0)  # lr_find restores the weights
        lrs = learn.recorder.lrs
        assert len(lrs) > 5 and lrs[-1] > lrs[0] and res.valley > 0
        runs.append((tr.ws, learn.recorder.losses))
    (ws_ref,l_ref),(ws,l) = runs
    assert len(ws) == len(ws_ref) > 5 and all(torch.equal(a, b) for a,b in zip(ws, ws_ref))
    assert not torch.equal(ws[0], ws[-1]) and not torch.equal(ws[0], a0)  # the scratch step moved them
    assert all(torch.equal(a, b) for a,b in zip(l, l_ref))

def test_refuses_other_optimizers():
    for opt_func in (Adam, RMSProp, partial(OptimWrapper, opt=torch.optim.SGD)):
        learn = Learner(linear_dls(), LinearModel(), loss_func=mse, opt_func=opt_func, cbs=ScratchSGD())
        a0 = learn.model.a.data.clone()
        with pytest.raises(TypeError, match="ScratchSGD mirrors fastai's `SGD` only"): learn.fit(1)
        assert torch.equal(learn.model.a.data, a0)

def test_order_lets_step_callbacks_act_first():
    from fastai.callback.training import GradientClip, GradientAccumulation
    from fastai.callback.fp16 import MixedPrecision
    assert ScratchSGD.order > max(GradientClip.order, MixedPrecision.order, GradientAccumulation.order)

def test_divergence_stops_with_finite_weights():
    learn = scratch_learner(linear_dls(bs=16), LinearModel(), lr=10.)
    with learn.no_bar(), learn.no_logging():
        with pytest.raises(DivergedError, match=r"epoch \d+/100, batch \d/5, with lr=10.0.*lr_find"): learn.fit(100)
    assert torch.isfinite(learn.model.a).all()

def test_non_finite_gradient_with_finite_loss_is_caught():
    class Poison(Callback):
        order = ScratchSGD.order - 1
        def before_step(self):
            if self.iter == 2: self.model.a.grad[0] = float('nan')
    learn = scratch_learner(linear_dls(bs=16), LinearModel(), lr=0.1, cbs=Poison())
    with learn.no_bar(), learn.no_logging():
        with pytest.raises(DivergedError, match="non-finite gradient of parameter `a` at epoch 1/1, batch 3/5"): learn.fit(1)
    assert torch.isfinite(learn.model.a).all()

def test_huge_finite_gradients_are_not_called_divergence():
    big = torch.full((4,), 3e38)
    from sgd_callbacks.divergence import all_finite
    assert all_finite([big]) and not all_finite([torch.tensor([1., float("inf")])])
    assert not all_finite([big, torch.ones(3), torch.tensor([float("nan"), 1.])]) and all_finite([big, torch.ones(3)])

@pytest.mark.parametrize('step_cb', [ScratchSGD, ScratchStep])
def test_divergence_names_the_parameter_and_writes_nothing(step_cb):
    "A non-finite gradient in one tensor of many: `DivergedError` names that parameter, and no weight is written."
    class Poison(Callback):
        order = ScratchSGD.order - 1
        def before_step(self):
            if self.iter == 1:
                self.model[1].weight.grad[0,1] = float('nan')
                self.learn.before = copy.deepcopy(self.model.state_dict())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    w0 = copy.deepcopy(model.state_dict())
    learn = Learner(linear_dls(bs=16), model, loss_func=mse, lr=0.1, opt_func=partial(SGD, mom=0.9), cbs=[step_cb(), Poison()])
    with learn.no_bar(), learn.no_logging():
        with pytest.raises(DivergedError, match=r"non-finite gradient of parameter `1.weight` at epoch 1/1, batch 2/5"): learn.fit(1)
    after = learn.model.state_dict()
    assert all(torch.equal(after[k], v) for k,v in learn.before.items())
    assert not torch.equal(after['0.weight'], w0['0.weight']) # the first step was taken
