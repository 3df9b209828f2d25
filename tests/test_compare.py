"compare_optimizers: parity rows, rows that do not apply, the plot, bad arguments."
import math, pytest, torch, numpy as np
from torch import nn
import matplotlib.pyplot as plt
from functools import partial
from PIL import Image
from sgd_callbacks.data import linear_dls, diabetes_dls, LinearModel
from sgd_callbacks.loaders import tensor_dls
from sgd_callbacks.compare import compare_optimizers, CONTENDERS
from sgd_callbacks.callback import ScratchSGD
import sgd_callbacks.compare as compare

@pytest.fixture(scope='module')
def lesson(): return compare_optimizers(epochs=3)

def test_lesson_rows_bit_identical(lesson):
    df = lesson.df
    assert df.contender.tolist() == list(CONTENDERS)
    # the first row is the reference (fastai's own run, identical by definition): the checks are the three others
    assert df.identical.tolist()[1:] == [True]*3 and (df.max_dw[1:] == 0).all() and lesson.mismatches() == []
    assert df.steps.tolist() == [24]*4 and df.epochs.tolist() == [3]*4
    for k in CONTENDERS[1:]: assert torch.equal(lesson.weights[k], lesson.weights['fastai SGD'])
    assert not torch.equal(lesson.weights['fastai SGD'][0], lesson.weights['fastai SGD'][-1])  # it trained
    assert df.valid_loss.notna().all()

def test_s_per_step_times_the_steps_alone(lesson):
    "The median time of a training step, for every contender"
    df = lesson.df
    assert (df.s_per_step > 0).all() and np.isfinite(df.s_per_step).all()

def lr_off(monkeypatch, factor):
    "`ScratchSGD` given `lr*factor` by its learner: a contender that really differs"
    real = compare.scratch_learner
    monkeypatch.setattr(compare, 'scratch_learner', lambda dls, model, lr, *a, **kw: real(dls, model, lr*factor, *a, **kw))

def test_different_lr_is_caught(monkeypatch):
    "The runner flags a contender trained with an lr 1e-6 apart: the step and parameter where it leaves fastai's"
    lr_off(monkeypatch, 1.000001)
    res = compare_optimizers(epochs=3)
    row = res.df.set_index('contender').loc['ScratchSGD']
    assert row.identical == False and row.expected and row.first_step == 1 and row.first_param == 'a' and 0 < row.first_dw < 1e-5
    assert [c for c,_ in res.mismatches()] == ['ScratchSGD']
    assert res.df.identical.tolist()[2:] == [True, True]  # the others still match

def test_no_op_step_is_caught(monkeypatch):
    "Mutation: `ScratchSGD.step` does nothing (fastai's step still cancelled): the weights never move, the runner says so"
    monkeypatch.setattr(ScratchSGD, 'step', lambda self: None)
    res = compare_optimizers(epochs=1)
    row = res.df.set_index('contender').loc['ScratchSGD']
    assert row.identical == False and row.first_step == 1 and row.max_dw > 0.1
    assert torch.equal(res.weights['ScratchSGD'][0], res.weights['ScratchSGD'][-1])
    assert res.mismatches() == [('ScratchSGD', row.max_dw)]

def ulp_off(real):
    "`sgd_update`, then the first weight moved by one unit in the last place"
    def update(ps, *a, **kw):
        real(ps, *a, **kw)
        w = ps[0].view(-1)
        w[0] = torch.nextafter(w[0], torch.tensor(math.inf))
    return update

@pytest.mark.parametrize('where', ['callback', 'scratch'])
def test_one_ulp_is_caught(monkeypatch, where):
    "Mutation: the update one ulp off, in `ScratchSGD` (callback) or in the plain loop (scratch); with the weights not recorded too"
    import sgd_callbacks.callback as cb, sgd_callbacks.scratch as sc
    mod = cb if where == 'callback' else sc
    monkeypatch.setattr(mod, 'sgd_update', ulp_off(mod.sgd_update))
    name = 'ScratchSGD' if where == 'callback' else 'plain loop'
    for rec in (True, False):
        res = compare_optimizers(epochs=1, record_weights=rec)
        row = res.df.set_index('contender').loc[name]
        assert row.identical == False and row.first_step == 1 and row.first_param == 'a', (rec, row)
        assert math.isnan(row.first_dw) != rec  # |Δw| at that step only where the weights are kept
        assert [c for c,_ in res.mismatches()] == [name]

def test_not_applicable_rows_are_kept():
    res = compare_optimizers(epochs=1, wd=0.1, mom=0.9, schedule='one_cycle')
    df = res.df.set_index('contender')
    assert df.loc['torch.optim.SGD', 'identical'] == 'n/a' and 'decoupled' in df.loc['torch.optim.SGD', 'note']
    assert math.isnan(df.loc['torch.optim.SGD', 'valid_loss'])
    assert df.loc['ScratchSGD', 'identical'] is True and res.mismatches() == []
    assert df.loc['plain loop', 'identical'] is True  # it walks fit_one_cycle's lr and mom schedules too

def small_cnn(dls):
    "Convolutions with BatchNorm (running statistics in the state_dict) and dropout (random masks)"
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(16, 10))

@pytest.mark.parametrize('schedule,size', [('fit', 8), ('one_cycle', 12)])
def test_image_plain_loop_bit_identical(schedule, size):
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import error_rate, accuracy
    from sgd_callbacks.vision import digits_dls
    cl = schedule=="one_cycle" # channels_last weights, as sgd_compare builds resnet34
    model_fn = lambda dls: small_cnn(dls).to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    res = compare_optimizers(partial(digits_dls, size=size, bs=128), model_fn, lr=0.1, mom=0.9, epochs=2, schedule=schedule,
                             loss_func=CrossEntropyLossFlat(), metrics=[error_rate, accuracy])
    df = res.df.set_index('contender')
    assert df.identical.tolist()[1:] == [True]*3 and res.mismatches() == [] and (df.note == '').all()
    sds = {k: m.state_dict() for k,m in res.models.items()}
    ref = sds.pop('fastai SGD')
    assert any(k.endswith('running_mean') for k in ref)
    assert not res.models['fastai SGD'].training
    for k,sd in sds.items(): # the three others against the reference
        assert sd.keys() == ref.keys() and all(torch.equal(sd[n], ref[n]) for n in ref), k  # BatchNorm buffers too
        assert not res.models[k].training  # left in eval mode, as the Learner leaves it
    assert all(torch.equal(res.losses[k], res.losses['fastai SGD']) for k in CONTENDERS[1:])
    assert list(df.columns[:4]) == ['train_loss', 'valid_loss', 'error_rate', 'accuracy']
    assert (df.error_rate + df.accuracy - 1).abs().max() < 1e-6 and df.error_rate.iloc[0] < 0.6  # it learns (chance: 0.9)
    m0 = small_cnn(None)
    assert not torch.equal(res.models['plain loop'][1].running_mean, m0[1].running_mean)  # the statistics were tracked

def test_plain_loop_sees_normalized_batches(monkeypatch):
    "Without the loader's `Normalize` the plain loop trains on other inputs, and the table shows it"
    from fastai.losses import CrossEntropyLossFlat
    from sgd_callbacks.vision import digits_dls
    import sgd_callbacks.compare as compare
    real = compare.fit_scratch
    def raw(*args, **kw): kw['after_batch'] = None; return real(*args, **kw)
    monkeypatch.setattr(compare, 'fit_scratch', raw)
    res = compare_optimizers(partial(digits_dls, size=8, bs=128), small_cnn, epochs=1, loss_func=CrossEntropyLossFlat())
    df = res.df.set_index('contender')
    assert not df.loc['plain loop', 'identical'] and df.loc['plain loop', 'max_dw'] > 0
    assert [c for c,_ in res.mismatches()] == ['plain loop']

def test_foreign_loader_marks_plain_loop_na():
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from torch.utils.data import TensorDataset
    x,y = linear_dls().train.dataset.tensors
    def dls_fn():
        ds = TensorDataset(x, y)
        return DataLoaders(DataLoader(ds, bs=16, shuffle=True), DataLoader(ds, bs=80))
    res = compare_optimizers(dls_fn, lambda dls: LinearModel(), epochs=2)
    df = res.df.set_index('contender')
    assert df.loc['plain loop', 'identical'] == 'n/a' and 'SliceDL' in df.loc['plain loop', 'note']
    assert df.loc['ScratchSGD', 'identical'] is True and df.loc['torch.optim.SGD', 'identical'] is True

def test_diabetes_and_plot(tmp_path):
    res = compare_optimizers(diabetes_dls, lr=0.01, mom=0.9, epochs=1)
    assert res.df.identical.tolist()[1:] == [True]*3 and res.df.steps.tolist() == [6]*4
    for r in (res, compare_optimizers(epochs=2)):
        fig = r.plot(); fig.savefig(tmp_path/'c.png'); plt.close(fig)
        im = Image.open(tmp_path/'c.png'); assert im.size[0] > 0 and im.size[1] > 0

@pytest.mark.parametrize('kw,msg', [(dict(lr=0), '`lr`'), (dict(lr=float('inf')), '`lr`'), (dict(epochs=0), '`epochs`'),
                                    (dict(mom=1.), '`mom`'), (dict(wd=-1), '`wd`'), (dict(schedule='x'), '`schedule`'),
                                    (dict(dls_fn=3), '`dls_fn`'), (dict(model_fn=lambda dls: None), '`model_fn`')])
def test_bad_arguments(kw, msg):
    with pytest.raises((TypeError, ValueError), match=msg): compare_optimizers(**kw)

def test_plot_names_the_loss_and_fills_both_panels():
    "The loss axis names the loss used; with no weights recorded the right panel shows each contender's validation results"
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import error_rate
    from sgd_callbacks.vision import digits_dls
    res = compare_optimizers(partial(digits_dls, size=8, bs=256), small_cnn, epochs=1, loss_func=CrossEntropyLossFlat(),
                             metrics=error_rate, record_weights=False)
    fig = res.plot()
    ax0,ax1 = fig.axes
    assert ax0.get_ylabel() == 'training loss (CrossEntropyLossFlat)' and ax1.get_xlabel() == 'validation loss (CrossEntropyLossFlat)'
    assert [p.get_width() for p in ax1.patches] == pytest.approx(res.df.valid_loss.tolist())
    assert [t.get_text() for t in ax1.get_yticklabels()] == res.df.contender.tolist()
    assert sum('error_rate' in t.get_text() and 'bit-identical' in t.get_text() for t in ax1.texts) == 3
    plt.close(fig)
    fig = compare_optimizers(epochs=1).plot()
    assert fig.axes[0].get_ylabel() == 'training loss (mse)' and fig.axes[1].lines # the landscape's paths
    plt.close(fig)

def test_plot_gives_each_contender_its_own_colour_and_marker(lesson):
    "Bit-identical rows lie on one curve: each keeps a colour and a marker of its own, on both panels"
    from matplotlib.colors import to_hex
    fig = lesson.plot()
    for ax in fig.axes:
        ls = [l for l in ax.lines if l.get_label().split(' (')[0] in CONTENDERS]
        assert len(ls) == 4 and len({to_hex(l.get_color()) for l in ls}) == 4 and len({l.get_marker() for l in ls}) == 4
    plt.close(fig)

def test_plot_says_when_its_curves_are_one(lesson):
    "Bit-identical curves lie on top of each other: the titles say so, and only when every curve drawn is identical"
    from sgd_callbacks.optim.step import lesson_rule
    fig = lesson.plot()
    assert [ax.get_title() for ax in fig.axes] == ['loss of every step (all 4 bit-identical: one curve)',
                                                   'weights after every step (all 4 bit-identical: one path)']
    plt.close(fig)
    res = compare_optimizers(epochs=1, rule=lesson_rule) # the lesson's literal step rounds apart from fastai's
    assert False in res.df.identical.tolist()
    fig = res.plot()
    assert [ax.get_title() for ax in fig.axes] == ['loss of every step', 'weights after every step']
    plt.close(fig)

# `CompareResult.explain` (sgd_callbacks.explain patches it on): the proven cause of every row that parts, nothing unproven
def mlp8(dls): torch.manual_seed(0); return nn.Sequential(nn.Linear(11, 8), nn.ReLU(), nn.Linear(8, 1))
def causes(**kw):
    import sgd_callbacks.explain # adds `CompareResult.explain`
    res = compare_optimizers(diabetes_dls, mlp8, epochs=2, **kw).explain()
    assert list(res.df.columns).index('cause') == list(res.df.columns).index('first_dw') + 1
    return dict(zip(res.df.contender, res.df.cause))

@pytest.mark.parametrize('kw,want', [
    (dict(lr=0.01, wd=0.1, decouple_wd=False), {'torch.optim.SGD': 'decayed_params', 'plain loop': '-'}),   # wd_bn_bias=False: biases
    (dict(opt='adam', lr=1e-2, wd=0.1), {'torch.optim.AdamW': 'decayed_params, op_order', 'plain loop': ''}), # and torch's roundings
    (dict(opt='rmsprop', mom=0.9, lr=1e-3), {'torch.optim.RMSprop': 'unexplained'}),  # another update: not op_order, not proven
    (dict(lr=0.1, rule=lambda p, g, state, lr, **_: p.sub_(lr*g)), {'rule <lambda>': 'unexplained'}), # your rule: nothing to name
    (dict(opt='lion', lr=1e-3), {'fastai Adam (AdamW)': '-'})])  # another algorithm than the reference's
def test_explain_names_only_proven_causes(kw, want):
    got = causes(**kw)
    assert {k: got[k] for k in want} == want, got
    assert all(v == '' for k,v in got.items() if k not in want), got  # the rows bit-identical to the reference

def test_explain_needs_a_comparison():
    import sgd_callbacks.explain
    with pytest.raises(ValueError, match='compare_optimizers'): compare.CompareResult(None, {}, {}, {}).explain()

@pytest.mark.parametrize('mom,same', [(0., True), (0.9, False)])
def test_torch_rmsprop_is_expected_identical_only_without_momentum(mom, same):
    "The declaration's `TorchTwin`: torch's RMSprop is fastai's op for op without momentum, another update with it"
    r = compare_optimizers(opt='rmsprop', mom=mom, lr=1e-2, epochs=2).df.set_index('contender')
    row = r.loc['torch.optim.RMSprop']
    assert bool(row.expected) == same and (row.identical is True) == same
    assert row.note == ('' if same else "keeps its momentum buffer of g/(sqrt(v)+eps) where fastai averages g first: another update")
