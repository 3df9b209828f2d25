"compare_optimizers: parity rows, rows that do not apply, the plot, bad arguments."
import math, pytest, torch
import matplotlib.pyplot as plt
from functools import partial
from PIL import Image
from sgd_callbacks.data import linear_dls, diabetes_dls, tensor_dls, LinearModel
from sgd_callbacks.compare import compare_optimizers, CONTENDERS

@pytest.fixture(scope='module')
def lesson(): return compare_optimizers(epochs=3)

def test_lesson_rows_bit_identical(lesson):
    df = lesson.df
    assert df.contender.tolist() == list(CONTENDERS)
    assert df.identical.tolist() == [True]*4 and (df.max_dw == 0).all() and lesson.mismatches() == []
    assert df.steps.tolist() == [24]*4 and df.epochs.tolist() == [3]*4
    for k in CONTENDERS: assert torch.equal(lesson.weights[k], lesson.weights['fastai SGD'])
    assert not torch.equal(lesson.weights['fastai SGD'][0], lesson.weights['fastai SGD'][-1])  # it trained
    assert (df.s_per_step > 0).all() and df.valid_loss.notna().all()

def test_different_lr_is_caught(lesson):
    # the same runner sees a difference when there is one: a contender trained with another lr
    other = compare_optimizers(epochs=3, lr=0.1000001)
    assert not torch.equal(other.models['ScratchSGD'].a, lesson.models['ScratchSGD'].a)

def test_not_applicable_rows_are_kept():
    res = compare_optimizers(epochs=1, wd=0.1, mom=0.9, schedule='one_cycle')
    df = res.df.set_index('contender')
    assert df.loc['torch.optim.SGD', 'identical'] == 'n/a' and 'decoupled' in df.loc['torch.optim.SGD', 'note']
    assert df.loc['plain loop', 'identical'] == 'n/a' and 'one_cycle' in df.loc['plain loop', 'note']
    assert math.isnan(df.loc['plain loop', 'valid_loss'])
    assert df.loc['ScratchSGD', 'identical'] is True and res.mismatches() == []

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
    assert res.df.identical.tolist() == [True]*4 and res.df.steps.tolist() == [6]*4
    for r in (res, compare_optimizers(epochs=2)):
        fig = r.plot(); fig.savefig(tmp_path/'c.png'); plt.close(fig)
        im = Image.open(tmp_path/'c.png'); assert im.size[0] > 0 and im.size[1] > 0

def test_mismatch_reported(lesson):
    import copy
    res = copy.copy(lesson); res.df = lesson.df.copy()
    res.df.loc[1, ['identical', 'max_dw']] = [False, 1e-7]
    assert res.mismatches() == [('ScratchSGD', 1e-7)]

@pytest.mark.parametrize('kw,msg', [(dict(lr=0), '`lr`'), (dict(lr=float('inf')), '`lr`'), (dict(epochs=0), '`epochs`'),
                                    (dict(mom=1.), '`mom`'), (dict(wd=-1), '`wd`'), (dict(schedule='x'), '`schedule`'),
                                    (dict(dls_fn=3), '`dls_fn`'), (dict(model_fn=lambda dls: None), '`model_fn`')])
def test_bad_arguments(kw, msg):
    with pytest.raises((TypeError, ValueError), match=msg): compare_optimizers(**kw)
