"The plain loop converges to the least-squares optimum in all three batch modes; the update rule is fastai's."
import pytest, torch
from torch import nn
from sgd_callbacks.all import *

x,y = linear_data(n=100, seed=42)
a_opt = lstsq_weights(x, y)

# Full batch converges geometrically: after 400 steps only float32 rounding is left. Minibatch and
# stochastic descent jitter around the optimum by about lr times the spread of per-point gradients.
@pytest.mark.parametrize('bs,lr,epochs,tol', [(None,0.1,400,1e-4), (10,0.1,100,0.05), (1,0.01,50,0.05)])
def test_converges_to_lstsq(bs, lr, epochs, tol):
    h = fit_scratch(x, y, (-1.,1.), lr=lr, epochs=epochs, bs=bs)
    assert (h.model.a.data - a_opt).abs().max() < tol
    assert h.loss[-1] < h.loss[0] / 10
    n_steps = epochs * (1 if bs is None else -(-100//bs))
    assert len(h.loss) == n_steps and h.weights.shape == (n_steps+1, 2)

def test_momentum_and_weight_decay_converge():
    h = fit_scratch(x, y, (-1.,1.), lr=0.05, epochs=300, mom=0.9)
    assert (h.model.a.data - a_opt).abs().max() < 1e-3
    # With weight decay the fixed point solves grad(mse) + wd*a = 0: (2/n XᵀX + wd I) a = 2/n Xᵀy
    h = fit_scratch(x, y, (-1.,1.), lr=0.1, epochs=300, wd=0.1)
    xd,yd = x.double(),y.double()
    a_wd = torch.linalg.solve(2/len(x)*xd.T@xd + 0.1*torch.eye(2, dtype=torch.float64), 2/len(x)*xd.T@yd).float()
    assert (h.model.a.data - a_wd).abs().max() < 1e-4 and h.model.a.data.norm() < a_opt.norm()

def test_lesson_rounding_differs_from_fused_step():
    g = torch.Generator().manual_seed(0)
    p,gr = torch.randn(10_000, generator=g),torch.randn(10_000, generator=g)
    lesson,ours = p.clone().sub_(0.1*gr),p.clone()
    sgd_update([ours], [gr.clone()], 0.1)
    assert not torch.equal(lesson, ours) and torch.allclose(lesson, ours)
    fastai_form = p.clone().add_(gr, alpha=-0.1)
    assert torch.equal(ours, fastai_form)

def test_accepts_a_module_and_leaves_requires_grad():
    m = LinearModel()
    fit_scratch(x, y, m, epochs=2)
    assert m.a.requires_grad and m.a.grad is not None and (m.a.grad == 0).all()

def test_plot_fit_accepts_tensors_that_require_grad(tmp_path):
    a = nn.Parameter(torch.tensor([-1.,1.]))
    with pytest.raises(RuntimeError, match="requires grad"): (x@a).numpy()
    for arg in (a, a.detach(), LinearModel(), None):
        ax = plot_fit(x, y, arg)
        f = tmp_path/'fit.png'; ax.figure.savefig(f)
        assert f.stat().st_size > 1000

def test_scheds_constant_is_the_float_lr_and_bad_keys_fail():
    h0 = fit_scratch(x, y, (-1.,1.), lr=0.1, epochs=3, bs=10, mom=0.9)
    h1 = fit_scratch(x, y, (-1.,1.), lr=0.5, epochs=3, bs=10, scheds={'lr': lambda pct: 0.1, 'mom': lambda pct: 0.9})
    assert torch.equal(h0.weights, h1.weights)
    seen = []
    fit_scratch(x, y, (-1.,1.), epochs=2, bs=50, scheds={'lr': lambda pct: seen.append(pct) or 0.1})
    assert seen == [0., 0.25, 0.5, 0.75]
    with pytest.raises(ValueError, match='`scheds`'): fit_scratch(x, y, (-1.,1.), scheds={'wd': lambda pct: 0.})

def test_after_batch_is_applied():
    h0 = fit_scratch(x, y, (-1.,1.), epochs=2, bs=10)
    h1 = fit_scratch(x/2, y, (-1.,1.), epochs=2, bs=10, after_batch=lambda b: (b[0]*2, b[1]))
    assert torch.equal(h0.weights, h1.weights)
