"""`fast.py` leans on fastai's private names: the methods `LeanLearner` overrides or calls, and three module-level names.
When fastai renames one or changes its signature, the parity tests fail without saying why; this test names it."""
import inspect, pytest
import fastai.learner as fl, fastai.callback.core as cc
from fastai.learner import Learner

# (object, private name, the parameters fast.py expects it to take; None: a value, not a function)
PRIVATE = [(Learner, '_call_one', ['self', 'event_name']), (Learner, '_do_epoch_train', ['self']),
           (Learner, '_do_epoch_validate', ['self', 'ds_idx', 'dl']), (Learner, '_split', ['self', 'b']),
           (Learner, '_set_device', ['self', 'b']), (Learner, '_do_grad_opt', ['self']),
           (Learner, '_backward', ['self']), (Learner, '_step', ['self']), (Learner, '_do_one_batch', ['self']),
           (Learner, '_with_events', ['self', 'f', 'event_type', 'ex', 'final']),
           (cc, '_events', None), (cc, '_inner_loop', None), (fl, '_maybe_item', ['t'])]

@pytest.mark.parametrize('owner,name,params', PRIVATE, ids=[n for _,n,_ in PRIVATE])
def test_fastai_private_name_fast_relies_on(owner, name, params):
    where = getattr(owner, '__name__', owner)
    assert hasattr(owner, name), f"fastai's {where}.{name} is gone: sgd_callbacks/fast.py (nbs/50_fast.ipynb) relies on it"
    if params is None: return
    got = list(inspect.signature(getattr(owner, name)).parameters)
    assert got == params, f"fastai's {where}.{name} now takes {got}, not {params}: sgd_callbacks/fast.py (nbs/50_fast.ipynb) relies on it"

def test_the_list_is_complete():
    "Every private `Learner` method `LeanLearner` overrides or calls is in the list above"
    import re
    from sgd_callbacks.fast import LeanLearner
    src = inspect.getsource(inspect.getmodule(LeanLearner))
    used = {n for n in re.findall(r'(?:self|learn)\.(_[a-z][a-z_]*)', src) if hasattr(Learner, n)}
    used |= {k for k in vars(LeanLearner) if k.startswith('_') and not k.startswith('__') and hasattr(Learner, k)}
    assert used <= {n for o,n,_ in PRIVATE if o is Learner}, sorted(used - {n for o,n,_ in PRIVATE if o is Learner})
