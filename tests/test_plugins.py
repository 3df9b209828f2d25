"""Your optimizer and problem in every command, without editing the package: `module:name`, entry points, `--hp`; bad
input refused before any training; `sgd_compare --opt X --out DIR` for every built-in."""
import io, os, sys, subprocess
from pathlib import Path
import pandas as pd
import pytest
from sgd_callbacks.cli import run_compare, run_bakeoff
from sgd_callbacks.optim.declare import DECLARATIONS

PKG = '''
import torch
from fastcore.basics import partial
from sgd_callbacks.optim.declare import OptDecl, RefSpec
from sgd_callbacks.bakeoff.problems import Problem
from sgd_callbacks.data import linear_dls, LinearModel

def signum_rule(p, g, state, lr, mom=0.9, wd=0., do_wd=True):
    "Signum: the sign of a momentum average; decoupled weight decay before the step"
    if do_wd and wd: p.mul_(1 - lr*wd)
    m = state.setdefault('m', torch.zeros_like(p))
    m.mul_(mom).add_(g, alpha=1-mom)
    p.add_(m.sign(), alpha=-lr)

class SignumTorch(torch.optim.Optimizer):
    "The authors' code: the same update"
    def __init__(self, params, lr=1e-3, momentum=0.9, weight_decay=0.):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
    @torch.no_grad()
    def step(self, closure=None):
        for grp in self.param_groups:
            for p in grp['params']:
                if p.grad is None: continue
                self.decay(p, grp)
                m = self.state[p].setdefault('m', torch.zeros_like(p))
                m.mul_(grp['momentum']).add_(p.grad, alpha=1-grp['momentum'])
                p.add_(m.sign(), alpha=-grp['lr'])
                self.late(p, grp)
    def decay(self, p, grp):
        if grp['weight_decay']: p.mul_(1 - grp['lr']*grp['weight_decay'])
    def late(self, p, grp): pass

class SignumLateWD(SignumTorch):
    "Not the same optimizer: weight decay after the step"
    def decay(self, p, grp): pass
    def late(self, p, grp): SignumTorch.decay(self, p, grp)

KW = dict(kw=dict(mom='momentum', wd='weight_decay'), hp_map=None)
SIGNUM = OptDecl('signum', rule=signum_rule, reference=RefSpec('mypkg', 'SignumTorch', **KW), bake_lr=1e-2)
SIGNUM_LATE = OptDecl('signum_late', rule=signum_rule, reference=RefSpec('mypkg', 'SignumLateWD', **KW))
NO_REF = OptDecl('signum_nr', rule=signum_rule, reference=RefSpec('not_installed_xyz.sub', 'Opt'))
CLASH = OptDecl('adam', rule=signum_rule)
LINE = Problem('tinyline', partial(linear_dls, bs=10, seed=42), lambda dls: LinearModel(2), target=0.5, steps=16, lrs=(1e-2, 1.), every=4)
NOT_A_PROBLEM = 3
'''
EPS = '[sgd_callbacks.optimizers]\nsignum = mypkg:SIGNUM\n\n[sgd_callbacks.problems]\ntinyline = mypkg:LINE\n'

@pytest.fixture(scope='module')
def pkg(tmp_path_factory):
    "A package of one's own in a folder, with a .dist-info that declares its optimizer and problem as entry points"
    d = tmp_path_factory.mktemp('site')
    (d/'mypkg').mkdir(); (d/'mypkg'/'__init__.py').write_text(PKG)
    di = d/'mypkg-0.1.dist-info'; di.mkdir()
    (di/'METADATA').write_text('Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n'); (di/'entry_points.txt').write_text(EPS)
    return d

def sh(pkg, *args):
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(pkg), os.environ.get('PYTHONPATH', '')]), 'OMP_NUM_THREADS': '1'}
    return subprocess.run([str(Path(sys.executable).parent/args[0]), *args[1:]], capture_output=True, text=True, env=env, timeout=300)

def table(out): return {l.split()[0]: l.split() for l in out.splitlines() if l.split()}

@pytest.mark.parametrize('opt', ['mypkg:SIGNUM', 'signum'])
def test_compare_your_declaration_against_its_reference(pkg, opt):
    "by module:name and by entry point: the rule is bit-identical to its class at every step"
    r = sh(pkg, 'sgd_compare', '--opt', opt, '--epochs', '2', '--wd', '0.1')
    assert r.returncode == 0, r.stdout + r.stderr
    rows = table(r.stdout)
    assert rows['mypkg.SignumTorch'][5] == 'True' and rows['rule_opt(signum_rule)'][5] == 'True', r.stdout
    assert rows['rule_opt(signum_rule)'][6] == '-'  # no first divergence: identical at every step, not only at the end

def test_compare_finds_a_reference_that_is_not_the_same_optimizer(pkg):
    "weight decay after the step: not bit-identical, exit 1, and where it first leaves the reference is shown"
    r = sh(pkg, 'sgd_compare', '--opt', 'mypkg:SIGNUM_LATE', '--epochs', '2', '--wd', '0.1')
    assert r.returncode == 1, r.stdout + r.stderr
    row = table(r.stdout)['rule_opt(signum_rule)']
    assert row[5] == 'False' and row[6] == '1' and row[7] == 'a', r.stdout  # after the first step, the lesson's weight `a`
    assert 'rule_opt(signum_rule) is not bit-identical to mypkg.SignumLateWD' in r.stderr

@pytest.mark.parametrize('opts,problems', [('sgd,mypkg:SIGNUM', 'mypkg:LINE'), ('sgd,signum', 'tinyline')])
def test_bakeoff_with_your_optimizer_and_problem(pkg, tmp_path, opts, problems):
    r = sh(pkg, 'sgd_bakeoff', '--opts', opts, '--problems', problems, '--trials', '2', '--seeds', '1', '--schedule', 'constant',
           '--out', str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    res = pd.read_csv(tmp_path/'results.csv')
    assert set(res.optimizer) == {'sgd', 'signum'} and set(res.problem) == {'tinyline'}, res

def test_help_lists_what_is_installed(pkg):
    for cmd,names in (('sgd_compare', ['signum']), ('sgd_bakeoff', ['signum', 'tinyline'])):
        r = sh(pkg, cmd, '--help')
        assert r.returncode == 0, r.stderr
        h = ' '.join(r.stdout.split())
        assert all(f'installed: {n}' in h for n in names), h

BAD_COMPARE = [(['nadam'], "--opt must be one of sgd, rmsprop, adam"),
               (['no_mod_xyz:f'], "--opt 'no_mod_xyz:f': no module named 'no_mod_xyz'"),
               (['mypkg:nope'], "--opt 'mypkg:nope': module mypkg has no name 'nope'"),
               (['mypkg:NOT_A_PROBLEM'], "'NOT_A_PROBLEM' is int, not an optimizer"),
               (['mypkg:NO_REF'], "`pip install not-installed-xyz`"),
               (['mypkg:CLASH'], "its name 'adam' clashes with the built-in adam"),
               (['adam', 'nope=1'], "--hp nope: adam has no hyper-parameter 'nope'"),
               (['adam', 'eps=x'], "--hp eps must be a number, got 'x'"),
               (['torch.optim:AdamW', 'eps=-1'], "AdamW refuses these hyper-parameters"),
               (['mypkg:SIGNUM', 'mom=x'], "--hp mom must be a number"),
               (['torch.optim:AdamW', '--mom'], "--mom: AdamW has no hyper-parameter 'mom'; set its own with --hp"),
               # a setting the rule checks only when it steps: refused before training, not at its first step
               (['kron', 'memory_save_mode=some'], "--opt kron: `memory_save_mode` must be None, 'smart_one_diag'")]

@pytest.mark.parametrize('args,msg', BAD_COMPARE, ids=[a[0] + (f' {a[1]}' if len(a) > 1 else '') for a,_ in BAD_COMPARE])
def test_bad_compare_input(pkg, monkeypatch, tmp_path, args, msg):
    "before any training: exit 2, one line naming the bad part, no file written"
    monkeypatch.syspath_prepend(str(pkg))
    out,err = io.StringIO(),io.StringIO()
    hp,mom = ([], '0.9') if args[1:] == ['--mom'] else (args[1:], None)
    assert run_compare(opt=args[0], hp=hp, mom=mom, out=str(tmp_path/'out'), file=out, err=err) == 2
    e = err.getvalue()
    assert msg in e and e.count('\n') == 1 and e.startswith('sgd_compare: error: '), e
    assert out.getvalue() == '' and not (tmp_path/'out').exists()

def test_hp_of_an_option_that_is_off():
    "A hyper-parameter whose default is None (Kron's `memory_save_mode`) takes a string, a number or none"
    from sgd_callbacks.plugins import parse_hp
    assert parse_hp('kron', ['memory_save_mode=one_diag', 'precond_prob=0.5']) == dict(memory_save_mode='one_diag',
                                                                                        precond_prob=0.5)
    assert parse_hp('kron', ['memory_save_mode=none']) == dict(memory_save_mode=None)

BAD_BAKEOFF = [(dict(opts='sgd,no_mod_xyz:f'), "--opts 'no_mod_xyz:f': no module named 'no_mod_xyz'"),
               (dict(opts='mypkg:CLASH'), "clashes with the built-in adam"),
               (dict(opts='mypkg:LINE'), "'LINE' is Problem, not an optimizer"),
               (dict(problems='mypkg:NOT_A_PROBLEM'), "--problems 'mypkg:NOT_A_PROBLEM' is int, not a Problem"),
               (dict(problems='mypkg:nope'), "module mypkg has no name 'nope'")]

@pytest.mark.parametrize('kw,msg', BAD_BAKEOFF, ids=[next(iter(k.values())) for k,_ in BAD_BAKEOFF])
def test_bad_bakeoff_input(pkg, monkeypatch, tmp_path, kw, msg):
    monkeypatch.syspath_prepend(str(pkg))
    out,err = io.StringIO(),io.StringIO()
    assert run_bakeoff(**kw, out=str(tmp_path/'out'), file=out, err=err, progress=False) == 2
    e = err.getvalue()
    assert msg in e and e.count('\n') == 1 and e.startswith('sgd_bakeoff: error: '), e
    assert out.getvalue() == '' and not (tmp_path/'out').exists()

@pytest.mark.parametrize('opt', [n for n,d in DECLARATIONS.items() if d.compare])
def test_compare_out_for_every_builtin(opt, tmp_path):
    "`--out DIR` writes the table and the pictures whichever optimizer ran (it ended in KeyError: 'ScratchSGD' for all but sgd)"
    out,err = io.StringIO(),io.StringIO()
    rc = run_compare(opt=opt, epochs='1', out=str(tmp_path), file=out, err=err)
    assert rc in (0, 1), err.getvalue()
    assert {'table.csv', 'table.json', 'loss.png', 'landscape.png', 'fit.gif'} <= {p.name for p in tmp_path.iterdir()}, out.getvalue()
    assert len(pd.read_csv(tmp_path/'table.csv')) >= 2

def test_explain_reads_the_family_from_the_declaration():
    "qhadam_rule is QHAdam, not Adam by a substring of its name; an undeclared rule is its own name, or its `family`"
    import torch
    from torch import nn
    from sgd_callbacks.explain import opt_family
    from sgd_callbacks.optim.step import rule_opt
    from sgd_callbacks.optim.fastai_rules import qhadam_rule, adam_rule
    def fam(rule): return opt_family(rule_opt(rule)([nn.Parameter(torch.zeros(2))], lr=1e-3))[0]
    def my_adamish_rule(p, g, state, lr): p.sub_(g, alpha=lr)
    assert (fam(qhadam_rule), fam(adam_rule), fam(my_adamish_rule)) == ('QHAdam', 'Adam', 'my_adamish_rule')
    my_adamish_rule.family = 'SGD'
    assert fam(my_adamish_rule) == 'SGD'

def test_compare_a_torch_optim_class_by_module_name():
    "`--opt torch.optim:AdamW --hp weight_decay=0.01`: the class runs as the first row, its hyper-parameter set by --hp"
    out,err = io.StringIO(),io.StringIO()
    assert run_compare(opt='torch.optim:AdamW', hp=['weight_decay=0.01'], epochs='1', file=out, err=err) == 0, err.getvalue()
    assert 'opt=AdamW' in out.getvalue() and 'weight_decay=0.01' in out.getvalue()
    assert table(out.getvalue())['AdamW'][5] == 'True'

@pytest.mark.parametrize('a,b,says', [('fastai:Adam,wd=0.01,eps=1e-3', 'opt:adam,wd=0.01,eps=1e-3', 'identical: every weight after every one of'),
                                       ('opt:signum', 'opt:mypkg:SIGNUM,wd=0.1', 'weight_decay')])
def test_explain_takes_a_declared_optimizer(pkg, tmp_path, a, b, says):
    """`sgd_explain` takes `opt:NAME` as `sgd_compare --opt` does: fastai's Adam against itself by name, its `eps`
    set through the spec, is identical;
    your optimizer, by entry point and by module:name, with two weight decays: the decay named as the cause"""
    r = sh(pkg, 'sgd_explain', a, b, '--epochs', '1', '--out', str(tmp_path))
    assert r.returncode == 0 and says in r.stdout, r.stdout + r.stderr
    assert (tmp_path/'explain.png').exists()

@pytest.mark.parametrize('spec,msg', [('opt:nope', "got 'nope'"), ('opt:adam,zz=1', 'zz is not a key of opt:adam'),
                                      ('opt:mypkg:NOPE', "has no name 'NOPE'")])
def test_explain_refuses_a_bad_declared_optimizer(pkg, tmp_path, spec, msg):
    r = sh(pkg, 'sgd_explain', spec, 'fastai:Adam', '--out', str(tmp_path))
    assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())
