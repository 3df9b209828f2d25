"""SOAP as a rule: `soap_rule` against `pytorch_optimizer.SOAP` bit for bit, weights and state (both moments, Shampoo's
statistics, the eigenbases), over 50 steps of a small MLP in a `Learner` (weight decay on and off, the bases refreshed
every step and every 10), every option on random gradients (merged dims of a kernel included), `sgd_compare`'s runner,
resume, bad input."""
import copy
import pytest, torch
from torch import nn
from fastai.basics import Learner, OptimWrapper, Callback, partial, set_seed
import fastai.callback.schedule, fastai.callback.core
from pytorch_optimizer import SOAP
from sgd_callbacks.all import *
from sgd_callbacks.scratch import mse
from sgd_callbacks.optim.soap import soap_rule, merged_shape

def same(r, s):
    "A state entry against the reference's `r`: `None` where it keeps `[]` (no basis on that dim)"
    if isinstance(r, list) and isinstance(s, list): return len(r) == len(s) and all(map(same, r, s))
    if isinstance(r, list): return r == [] and s is None
    return s is not None and torch.equal(r, s)

def states_match(ref_state, states):
    "Every tensor of SOAP's state the same bits as the reference's"
    return all(same(r[k], s[k]) for r,s in zip(ref_state, states) for k in ('exp_avg', 'exp_avg_sq', 'GG', 'Q'))

# ---- in a Learner: 50 steps of an MLP on diabetes

def mlp(): return nn.Sequential(nn.Linear(11, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1))
set_seed(0); M0 = mlp()

class Record(Callback):
    "Every weight after every step"
    order = 100
    def before_fit(self): self.ws = []
    def after_step(self): self.ws.append([p.detach().clone() for p in self.model.parameters()])

def fit50(opt_func, wd):
    "50 steps (6 a epoch): constant lr, weights recorded after each step"
    learn = Learner(diabetes_dls(bs=64), copy.deepcopy(M0), loss_func=mse, opt_func=opt_func, lr=3e-3, wd=wd,
                    wd_bn_bias=True, cbs=[EpochShuffle(0), Record()])
    with learn.no_bar(), learn.no_logging(): learn.fit(9)
    return learn

@pytest.mark.parametrize('wd', [0., 0.01])
@pytest.mark.parametrize('freq', [1, 10])
def test_fit_matches_pytorch_optimizer_bit_for_bit(wd, freq):
    "Every weight after each of 54 steps, then both moments, the statistics and the bases: torch.equal"
    ours = fit50(rule_opt(soap_rule, precondition_frequency=freq), wd)
    ref = fit50(partial(OptimWrapper, opt=partial(SOAP, precondition_frequency=freq)), wd)
    wo,wr = ours.cbs.filter(lambda c: isinstance(c, Record))[0].ws,ref.cbs.filter(lambda c: isinstance(c, Record))[0].ws
    assert len(wo) == len(wr) == 54
    for i,(a,b) in enumerate(zip(wo, wr)): assert all(torch.equal(x, y) for x,y in zip(a, b)), f"step {i+1}"
    ps = list(ours.model.parameters())
    assert states_match([ref.opt.opt.state[p] for p in ref.model.parameters()], [ours.opt.state[p] for p in ps])
    assert all(not torch.equal(p, q) for p,q in zip(ps, M0.parameters())) # every tensor moved
    assert all(torch.equal(a, b) for a,b in zip(wo[0], M0.parameters())) # the first step only gathers
    assert ours.opt.state[ps[0]]['Q'][0].shape == (16, 16) and ours.opt.state[ps[1]]['Q'] == [None] # a bias: no basis

# ---- every option, on random gradients

def stepped(shapes, n=50, seed=0, lr=3e-3, **kw):
    "Parameters stepped `n` times by `SOAP` and by `soap_rule` on the same random gradients: (ref, ours, their states)"
    g = torch.Generator().manual_seed(seed)
    ref = [nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    ours,states = [nn.Parameter(p.detach().clone()) for p in ref],[{} for _ in shapes]
    rk = {('weight_decay' if k == 'wd' else k): v for k,v in kw.items() if k not in ('mom', 'sqr_mom')}
    opt = SOAP(ref, lr=lr, betas=(kw.get('mom', 0.95), kw.get('sqr_mom', 0.95)), **rk)
    for _ in range(n):
        grads = [torch.randn(s, generator=g) for s in shapes]
        for p,q,gr in zip(ref, ours, grads): p.grad,q.grad = gr.clone(),gr.clone()
        opt.step()
        with torch.no_grad():
            for q,st in zip(ours, states): soap_rule(q, q.grad, st, lr=lr, **kw)
    return ref,ours,[opt.state[p] for p in ref],states

SHAPES = [(16, 11), (16,), (1, 16), (4, 3, 2, 2)]
OPTIONS = [dict(wd=0.), dict(mom=0.9, sqr_mom=0.99, shampoo_beta=0.9, precondition_frequency=1),
           dict(precondition_1d=True, normalize_gradient=True, precondition_frequency=3),
           dict(correct_bias=False, max_precondition_dim=12, eps=1e-6, precondition_frequency=4)]

@pytest.mark.parametrize('kw', OPTIONS, ids=str)
def test_options_match_pytorch_optimizer(kw):
    ref,ours,rs,ss = stepped(SHAPES, **kw)
    assert all(torch.equal(a, b) for a,b in zip(ref, ours)) and states_match(rs, ss)

@pytest.mark.parametrize('fmt', ['channels_first', 'channels_last'])
def test_merged_dims_of_a_kernel_match(fmt):
    "An 8×3×3×3 kernel merged to 8×9×3 (channels-last: read as NHWC first), with a bias and a matrix beside it"
    kw = dict(merge_dims=True, max_precondition_dim=9, precondition_frequency=2, data_format=fmt)
    ref,ours,rs,ss = stepped([(8, 3, 3, 3), (10,), (10, 72)], **kw)
    assert all(torch.equal(a, b) for a,b in zip(ref, ours)) and states_match(rs, ss)
    assert [tuple(q.shape) for q in ss[0]['Q']] == [(8, 8), (9, 9), (3, 3)]

# ---- sgd_compare's runner, on a model with matrices

def _mlp(dls): return nn.Sequential(nn.Linear(dls.train.dataset.tensors[0].shape[1], 8), nn.ReLU(), nn.Linear(8, 1),
                                    nn.Flatten(0))

def test_compare_puts_the_rule_beside_its_reference():
    res = compare_optimizers(diabetes_dls, _mlp, lr=3e-3, wd=0.01, epochs=2, opt='soap', precondition_frequency=2)
    df = res.df.set_index('contender')
    assert df.index.tolist()[:2] == ['pytorch_optimizer.SOAP', 'rule_opt(soap_rule)']
    assert res.mismatches() == [] and df.identical.tolist()[:2] == [True, True]
    assert not same_weights(res.models['pytorch_optimizer.SOAP'], _mlp(diabetes_dls()))

# ---- resume

class StopAfter(Callback):
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch+1 == self.n: raise fastai.callback.core.CancelFitException()

def test_resume_is_bit_identical(tmp_path):
    "fit_one_cycle(3) in one go equals 1 epoch, save(with_opt), a fresh learner, load, go on: the bases are saved"
    def mk(): return Learner(diabetes_dls(bs=64), copy.deepcopy(M0), loss_func=mse, lr=3e-3, wd=0.01, path=tmp_path,
                             opt_func=rule_opt(soap_rule, precondition_frequency=4), cbs=EpochShuffle(0))
    whole = mk()
    with whole.no_bar(), whole.no_logging(): whole.fit_one_cycle(3)
    a = mk()
    with a.no_bar(), a.no_logging(): a.fit_one_cycle(3, cbs=[StopAfter(1)])
    a.save('half', with_opt=True)
    b = mk(); b.load('half', with_opt=True)
    with b.no_bar(), b.no_logging(): b.fit_one_cycle(3, start_epoch=1)
    assert same_weights(whole.model, b.model) and not same_weights(whole.model, a.model)

# ---- bad input

BAD = [(dict(precondition_frequency=0), r"`precondition_frequency` must be >= 1, got 0"),
       (dict(max_precondition_dim=2.5), r"`max_precondition_dim` must be an int, got 2.5"),
       (dict(data_format='NHWC'), r"`data_format` must be one of channels_first, channels_last"),
       (dict(merge_dims=True), r"merges a parameter of shape \(16, 11\) into one dim of 176")]

@pytest.mark.parametrize('kw,msg', BAD)
def test_bad_settings_stop_at_the_first_step(kw, msg):
    learn = Learner(diabetes_dls(bs=64), copy.deepcopy(M0), loss_func=mse, opt_func=rule_opt(soap_rule, **kw), lr=3e-3)
    with pytest.raises(RuleError, match=msg):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert same_weights(learn.model, M0)

def test_merged_shape_is_the_references():
    assert merged_shape((64, 3, 3, 3), 64) == [64, 27] and merged_shape((8, 3, 3, 3), 9) == [8, 9, 3]
    assert merged_shape((1, 2, 768, 1, 2048), 1024) == [2, 768, 2048] and merged_shape((1, 1), 4) == [1]
