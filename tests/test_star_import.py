"`from sgd_callbacks.all import *` after any of fastai's star imports adds names and changes none of fastai's."
import json, subprocess, sys, textwrap
import pytest, torch
import sgd_callbacks.all as sa
from sgd_callbacks.scratch import mse

FASTAI = ['fastai.basics', 'fastai.vision.all', 'fastai.tabular.all', 'fastai.text.all', 'fastai.collab']

@pytest.fixture(scope='module')
def star_imports():
    "In one fresh process (fastai imported once), each fastai star import in its own namespace, then the package's"
    code = textwrap.dedent(f"""
        import json, warnings; warnings.filterwarnings('ignore')
        import sgd_callbacks.all as sa
        res = {{}}
        for mod in {FASTAI!r}:
            ns = {{}}
            exec(f'from {{mod}} import *', ns)
            before = {{k: v for k, v in ns.items() if not k.startswith('_')}}
            exec('from sgd_callbacks.all import *', ns)
            res[mod] = dict(changed=sorted(k for k, v in before.items() if ns[k] is not v),
                            added=sorted(set(sa.__all__) - set(before)), n=len(before))
        print(json.dumps(res))""")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])

@pytest.mark.parametrize('mod', FASTAI)
def test_star_import_leaves_every_fastai_name_as_it_was(star_imports, mod):
    res = star_imports[mod]
    assert res['n'] >= 5, res            # fastai's names really were there to check (fastai.collab exports 5)
    assert res['changed'] == [], res['changed']
    assert {'ScratchSGD', 'ScratchStep', 'scratch_learner', 'compare_optimizers', 'create_cnn', 'linear_dls'} <= set(res['added'])

def test_all_lists_existing_public_names_only():
    assert len(sa.__all__) == len(set(sa.__all__))
    for k in sa.__all__: assert hasattr(sa, k), k
    for k in ('mse', 'check_int', 'check_float', 'check_hypers', 'as_weights', 'check_xy', 'Tensors'):
        assert k not in sa.__all__, k

def test_mse_flattens_as_fastai_does():
    assert mse(torch.arange(4.).view(4,1), torch.arange(4.)) == 0   # not the 2.5 of a 4×4 broadcast
    with pytest.raises(ValueError, match='as many elements'): mse(torch.zeros(3), torch.zeros(4))
    from fastai.metrics import mse as fastai_mse
    p,t = torch.randn(50, 1, requires_grad=True),torch.randn(50)
    l1,l2 = mse(p, t),fastai_mse(p, t)
    assert torch.equal(l1, l2)
    assert torch.equal(torch.autograd.grad(l1, p)[0], torch.autograd.grad(l2, p)[0])

# pytest-xdist (pyproject.toml): this file's tests on one worker, so its module fixtures are built once
pytestmark = pytest.mark.xdist_group('star_import')
