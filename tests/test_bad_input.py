"""Bad input everywhere: each case must fail before any work with an error naming the argument.
The cases tried are listed here, one per row: (callable, expected exception, text the message must contain)."""
import pytest, torch
from torch import nn
from sgd_callbacks.all import *

nan,inf = float('nan'),float('inf')
x,y = linear_data()

CASES = {
    # linear_data
    'n zero':            (lambda: linear_data(n=0), ValueError, '`n` must be >= 1'),
    'n negative':        (lambda: linear_data(n=-5), ValueError, '`n` must be >= 1'),
    'n float':           (lambda: linear_data(n=2.5), TypeError, '`n` must be an int'),
    'n string':          (lambda: linear_data(n='100'), TypeError, '`n` must be an int'),
    'n bool':            (lambda: linear_data(n=True), TypeError, '`n` must be an int'),
    'a too short':       (lambda: linear_data(a=(3.,)), ValueError, '`a` must hold 2 numbers'),
    'a too long':        (lambda: linear_data(a=(3.,2.,1.)), ValueError, '`a` must hold 2 numbers'),
    'a matrix':          (lambda: linear_data(a=[[3.,2.]]), ValueError, '`a` must hold 2 numbers'),
    'a text':            (lambda: linear_data(a='ab'), TypeError, '`a` must be a sequence of numbers'),
    'a nan':             (lambda: linear_data(a=(nan,2.)), ValueError, '`a` must be finite'),
    'noise negative':    (lambda: linear_data(noise=-1.), ValueError, '`noise` must be >= 0'),
    'noise nan':         (lambda: linear_data(noise=nan), ValueError, '`noise` must be finite'),
    'seed negative':     (lambda: linear_data(seed=-1), ValueError, '`seed` must be >= 0'),
    'seed float':        (lambda: linear_data(seed=1.5), TypeError, '`seed` must be an int'),
    # linear_dls / tensor_dls / diabetes_dls
    'bs zero':           (lambda: linear_dls(bs=0), ValueError, '`bs` must be between 1 and 80'),
    'bs negative':       (lambda: linear_dls(bs=-3), ValueError, '`bs` must be between 1 and 80'),
    'bs above n':        (lambda: linear_dls(bs=81), ValueError, '`bs` must be between 1 and 80'),
    'bs float':          (lambda: linear_dls(bs=16.), TypeError, '`bs` must be an int'),
    'valid_pct 0':       (lambda: linear_dls(valid_pct=0.), ValueError, '`valid_pct` must be > 0 and < 1'),
    'valid_pct 1':       (lambda: linear_dls(valid_pct=1.), ValueError, '`valid_pct` must be > 0 and < 1'),
    'valid_pct 1.5':     (lambda: linear_dls(valid_pct=1.5), ValueError, '`valid_pct` must be > 0 and < 1'),
    'valid_pct nan':     (lambda: linear_dls(valid_pct=nan), ValueError, '`valid_pct` must be finite'),
    'valid_pct empties': (lambda: linear_dls(n=3, valid_pct=0.1), ValueError, '`valid_pct`=0.1 leaves no row'),
    'dls x not tensor':  (lambda: tensor_dls(x.tolist(), y), TypeError, '`x` and `y` must be tensors'),
    'dls rows differ':   (lambda: tensor_dls(x, y[:-1]), ValueError, 'as many rows'),
    'dls empty':         (lambda: tensor_dls(x[:0], y[:0]), ValueError, 'as many rows, at least one'),
    'dls nan x':         (lambda: tensor_dls(torch.where(x>0.9, nan, x), y), ValueError, '`x` must be finite'),
    'dls inf y':         (lambda: tensor_dls(x, y.clone().index_fill_(0, torch.tensor([3]), inf)), ValueError, '`y` must be finite'),
    'diabetes bs':       (lambda: diabetes_dls(bs=0), ValueError, '`bs` must be between 1 and'),
    'diabetes pct':      (lambda: diabetes_dls(valid_pct=2.), ValueError, '`valid_pct`'),
    # LinearModel
    'n_in zero':         (lambda: LinearModel(0), ValueError, '`n_in` must be >= 1'),
    'init length':       (lambda: LinearModel(2, init=(1.,)), ValueError, '`init` must hold 2 numbers'),
    'init nan':          (lambda: LinearModel(2, init=(nan,1.)), ValueError, '`init` must be finite'),
    # fit_scratch
    'lr zero':           (lambda: fit_scratch(x, y, (-1.,1.), lr=0.), ValueError, '`lr` must be > 0'),
    'lr negative':       (lambda: fit_scratch(x, y, (-1.,1.), lr=-0.1), ValueError, '`lr` must be > 0'),
    'lr nan':            (lambda: fit_scratch(x, y, (-1.,1.), lr=nan), ValueError, '`lr` must be finite'),
    'lr inf':            (lambda: fit_scratch(x, y, (-1.,1.), lr=inf), ValueError, '`lr` must be finite'),
    'lr string':         (lambda: fit_scratch(x, y, (-1.,1.), lr='0.1'), TypeError, '`lr` must be a number'),
    'epochs zero':       (lambda: fit_scratch(x, y, (-1.,1.), epochs=0), ValueError, '`epochs` must be >= 1'),
    'fit bs zero':       (lambda: fit_scratch(x, y, (-1.,1.), bs=0), ValueError, '`bs` must be between 1 and 100'),
    'fit bs above n':    (lambda: fit_scratch(x, y, (-1.,1.), bs=101), ValueError, '`bs` must be between 1 and 100'),
    'mom one':           (lambda: fit_scratch(x, y, (-1.,1.), mom=1.), ValueError, '`mom` must be >= 0 and < 1'),
    'mom negative':      (lambda: fit_scratch(x, y, (-1.,1.), mom=-0.5), ValueError, '`mom` must be >= 0'),
    'wd negative':       (lambda: fit_scratch(x, y, (-1.,1.), wd=-0.1), ValueError, '`wd` must be >= 0'),
    'fit nan data':      (lambda: fit_scratch(torch.full_like(x, nan), y, (-1.,1.)), ValueError, '`x` must be finite'),
    'fit rows differ':   (lambda: fit_scratch(x, y[:5], (-1.,1.)), ValueError, 'as many rows'),
    'model text':        (lambda: fit_scratch(x, y, 'resnet'), TypeError, '`model_or_a` must be'),
    'model frozen':      (lambda: fit_scratch(x, y, LinearModel().requires_grad_(False)), ValueError, 'no trainable parameters'),
    # scratch_learner
    'learner lr nan':    (lambda: scratch_learner(linear_dls(), LinearModel(), lr=nan), ValueError, '`lr` must be finite'),
    'learner lr 0':      (lambda: scratch_learner(linear_dls(), LinearModel(), lr=0), ValueError, '`lr` must be > 0'),
    'learner mom':       (lambda: scratch_learner(linear_dls(), LinearModel(), mom=1.5), ValueError, '`mom`'),
    'learner wd':        (lambda: scratch_learner(linear_dls(), LinearModel(), wd=-1), ValueError, '`wd` must be >= 0'),
    'learner model':     (lambda: scratch_learner(linear_dls(), lambda x: x), TypeError, '`model` must be an nn.Module'),
    'learner dls':       (lambda: scratch_learner((x, y), LinearModel()), TypeError, '`dls` must be fastai DataLoaders'),
}

@pytest.mark.parametrize('case', list(CASES))
def test_bad_input_fails_clearly(case):
    f,exc,msg = CASES[case]
    with pytest.raises(exc) as e: f()
    assert msg in str(e.value), f"{case}: {e.value}"

def test_bad_weights_are_left_untouched():
    "A refused fit leaves the model exactly as it was."
    m = LinearModel()
    for kw in (dict(lr=nan), dict(epochs=0), dict(bs=1000)):
        with pytest.raises((ValueError, TypeError)): fit_scratch(x, y, m, **kw)
        assert torch.equal(m.a.data, torch.tensor([-1.,1.])) and m.a.grad is None
