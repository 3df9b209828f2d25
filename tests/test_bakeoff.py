"The bake-off on tiny budgets: scoring recomputed from results.csv, divergence kept, reruns bit-identical, bad input, own rule and problem, the HTML page."
import base64, io, json, math, random, re, subprocess, sys
from contextlib import redirect_stdout
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from torch import nn
from fastcore.basics import partial
from fastai.learner import Learner
from fastai.optimizer import SGD, Adam
from sgd_callbacks.data import linear_dls, LinearModel
from sgd_callbacks.scratch import mse
from sgd_callbacks.bakeoff.problems import Problem, BAKEOFF_PROBLEMS, Rosenbrock, rosen_dls, rosen_loss
from sgd_callbacks.optim.declare import DECLARATIONS
from sgd_callbacks.bakeoff.run import BAKEOFF_OPTS, DEFAULT_OPTS, OptEntry, bakeoff, own_rule, run_trial, trial_seed, performance_profile
from sgd_callbacks.cli import run_bakeoff, sgd_bakeoff

def tiny(name='line', steps=40, lrs=(1e-2, 3.)):
    "A built-in problem with a small budget (the same data, model and target)"
    pb = BAKEOFF_PROBLEMS[name]
    return Problem(name, pb.dls_fn, pb.model_fn, pb.loss_func, pb.target, pb.metric, pb.metric_name, pb.higher,
                   steps=steps, lrs=lrs, every=2)

def quad(): return tiny('quadratic', steps=60, lrs=(1e-2, 3.))
OPTS = {'sgd': SGD, 'adam': Adam}
KW = dict(trials=4, seeds=4, progress=False, schedule='constant') # an even number of seeds: the lower median is not numpy's

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "One tiny bake-off, written out twice by two identical runs"
    d = tmp_path_factory.mktemp('bakeoff')
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone(), torch.get_num_threads()
    with redirect_stdout(io.StringIO()):
        r1 = bakeoff([tiny(), quad()], OPTS, **KW); r1.save(d/'a')
        r2 = bakeoff([tiny(), quad()], OPTS, **KW); r2.save(d/'b')
    after = random.getstate(), np.random.get_state()[1], torch.get_rng_state(), torch.get_num_threads()
    return d, r1, states, after

def lower_median(xs): xs = sorted(xs); return xs[(len(xs)-1)//2]

def test_results_are_lower_medians_of_the_seeds(run):
    d = run[0]/'a'
    res,tr = pd.read_csv(d/'results.csv'),pd.read_csv(d/'trials.csv')
    assert len(res) == 4 and len(tr) == 4*(4+4)
    spread = 0
    for r in res.itertuples():
        t = tr[(tr.problem == r.problem) & (tr.optimizer == r.optimizer) & tr.scored]
        assert len(t) == 4 and sorted(t.seed) == [1, 2, 3, 4] and (t.lr == r.lr).all() # fresh seeds: the tuning trial (seed 0) is not scored
        assert (t.stage == 'seed').all() and not tr[tr.stage == 'tune'].scored.any()
        tune = tr[(tr.problem == r.problem) & (tr.optimizer == r.optimizer) & (tr.stage == 'tune')]
        key = tune.assign(s=tune.steps_to_target.fillna(np.inf), f=tune.final_loss).sort_values(['s', 'f'])
        assert key.lr.iloc[0] == r.lr                                  # the fewest steps, then the lowest final loss
        steps = t.steps_to_target.fillna(np.inf).tolist()
        m = lower_median(steps)
        assert r.reached == pytest.approx(t.reached.mean())
        assert (pd.isna(r.steps_to_target) and m == np.inf) or r.steps_to_target == m
        assert (r.reached >= 0.5) == (not pd.isna(r.steps_to_target))   # not reached when fewer than half the seeds reach it
        spread += len(set(steps)) > 1
    assert spread, "the seeds never disagree: the median is not tested"

def algoperf_scores(times, n_problems, tau_max=4., points=100):
    """AlgoPerf's scoring (scoring/performance_profile.py, compute_performance_profiles and compute_leaderboard_score
    with normalize=True), written out: `times` {(problem, optimizer): time or inf}"""
    pbs,ops = sorted({p for p,_ in times}),sorted({o for _,o in times})
    best = {p: min(times[p, o] for o in ops) for p in pbs}
    cut = {k: (np.inf if v > 4*best[k[0]] else v) for k,v in times.items()}    # over 4x the fastest: not solved
    ratio = {k: (v/best[k[0]] if np.isfinite(best[k[0]]) else np.inf) for k,v in cut.items()}
    taus = np.linspace(1., tau_max, points)
    rho = {o: np.array([sum(ratio[p, o] <= t for p in pbs)/n_problems for t in taus]) for o in ops}
    return taus, rho, {o: np.trapezoid(rho[o], taus)/(taus.max()-taus.min()) for o in ops}, ratio

def test_profile_and_scores_from_results_csv(run):
    "AlgoPerf's definitions recomputed from results.csv alone give the report's profile and scores; the CSVs round-trip exactly"
    d = run[0]/'a'
    res,prof,sc = (pd.read_csv(d/f'{k}.csv') for k in ('results', 'profile', 'scores'))
    st = {(r.problem, r.optimizer): (np.inf if pd.isna(r.steps_to_target) else r.steps_to_target) for r in res.itertuples()}
    taus,rho,score,ratio = algoperf_scores(st, len(set(res.problem)))
    assert len(set(ratio.values())) > 2                                   # a profile with steps in it
    assert np.array_equal(np.sort(prof.tau.unique()), taus)
    for o in rho: assert np.array_equal(prof[prof.optimizer == o].sort_values('tau').rho.values, rho[o])
    for r in sc.itertuples():
        assert r.score == pytest.approx(score[r.optimizer], rel=1e-12)
        assert r.solved == sum(np.isfinite(ratio[p, r.optimizer]) for p in set(res.problem))
        exact = np.mean([max(4. - max(ratio[p, r.optimizer], 1.), 0.)/3 for p in set(res.problem)]) # the step function's area
        assert r.area == pytest.approx(exact, rel=1e-12)
    assert list(sc.score) == sorted(sc.score, reverse=True)
    p2,s2 = performance_profile(res)                                      # read back: the same numbers, to the last bit
    assert p2.equals(prof) and np.array_equal(s2.score.values, sc.score.values) and np.array_equal(s2.area.values, sc.area.values)

def test_profile_by_hand():
    "Two problems: a solves both first; b solves one 2x slower and never the other"
    res = pd.DataFrame(dict(problem=['p', 'p', 'q', 'q'], optimizer=['a', 'b']*2, steps_to_target=[10, 20, 5, None]))
    prof,sc = performance_profile(res, tau_max=3.)
    s = sc.set_index('optimizer')
    assert s.score['a'] == 1. and s.area['b'] == 0.5*(3-2)/2 and s.score['b'] == pytest.approx(0.25, abs=0.01)
    rho = prof.set_index(['optimizer', 'tau']).rho
    assert rho['b', 1.] == 0 and rho['b', 3.] == 0.5 and rho['a', 1.] == 1 and prof.tau.max() == 3.
    # AlgoPerf's 4x cut: 5 steps against the best's 1 is unsolved, 4 is solved at tau 4
    res = pd.DataFrame(dict(problem=['p']*3, optimizer=['a', 'b', 'c'], steps_to_target=[1, 4, 5]))
    assert performance_profile(res)[1].set_index('optimizer').solved.to_dict() == {'a': 1, 'b': 1, 'c': 0}

def test_diverging_lr_marked_and_kept(run):
    tr = pd.read_csv(run[0]/'a'/'trials.csv')
    div = tr[tr.diverged]
    assert len(div) >= 1 and (div.lr == 3.).all()                     # sgd at lr=3 on the line: |1-3λ| > 1
    assert (~div.reached).all() and div.steps_to_target.isna().all() and np.isinf(div.final_loss).all()
    assert len(tr[(tr.stage == 'tune')]) == 2*2*4                      # every tuning trial is in the table

def test_rerun_bit_identical_and_caller_state_untouched(run):
    d,_,before,after = run
    for k in ('results', 'trials', 'profile', 'scores'):
        a,b = (pd.read_csv(d/s/f'{k}.csv') for s in 'ab')
        a,b = (x.drop(columns=[c for c in x if 'seconds' in c]) for x in (a, b))
        assert a.to_csv() == b.to_csv(), k
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and torch.equal(before[2], after[2])
    assert before[3] == after[3]                                     # torch's thread count put back

def test_trial_seed_is_stable():
    out = subprocess.run([sys.executable, '-c', "from sgd_callbacks.bakeoff.run import trial_seed; print(trial_seed('line','sgd',0.1,0))"],
                         capture_output=True, text=True, env={**dict(__import__('os').environ), 'PYTHONHASHSEED': '123'})
    assert int(out.stdout.split()[-1]) == trial_seed('line', 'sgd', 0.1, 0)
    assert trial_seed('line', 'sgd', 0.1, 0) != trial_seed('line', 'sgd', 0.1, 1) != trial_seed('line', 'adam', 0.1, 1)

def test_fast_path_equals_the_learner():
    "The plain loop (fast path) and a LeanLearner with EpochShuffle give the same trajectory, bit for bit"
    pb = Problem('rosenbrock', rosen_dls, lambda dls: Rosenbrock(), loss_func=rosen_loss, target=0.05, steps=30, lrs=(1e-3, 1e-2), every=3)
    for opt in (SGD, Adam, partial(SGD, mom=0.9)):
        a,b = (run_trial(pb, opt, 1e-3, 7, paths=True, fast=f) for f in (True, False))
        wa,wb = torch.stack(a.ws),torch.stack(b.ws)
        assert len(wa) == 31 and not torch.equal(wa[0], wa[-1])         # the weights moved
        assert torch.equal(wa, wb) and a.losses == b.losses and a.metrics == b.metrics
    # an MLP with biases, under Adam's decoupled weight decay (0.01), which Learner.create_opt skips for biases
    a,b = (run_trial(tiny('cancer', steps=12, lrs=(1e-2, 1e-1)), Adam, 0.05, 7, fast=f) for f in (True, False))
    assert a.losses == b.losses and a.metrics == b.metrics and a.losses[0] != a.losses[-1]

def my_sgd(p, g, state, lr, **_): p.add_(g, alpha=-lr)                 # fastai's sgd_step, written by a user

def test_own_rule_and_own_problem():
    def learner_fn(opt_func, lr): return Learner(linear_dls(bs=10), LinearModel(2), loss_func=mse, opt_func=opt_func, lr=lr)
    mine = Problem('mine', learner_fn=learner_fn, target=0.08, steps=30, lrs=(0.05, 0.2), every=2)
    with redirect_stdout(io.StringIO()): r = bakeoff([mine, tiny()], {'sgd': SGD, 'my_sgd': own_rule(my_sgd)}, trials=2, seeds=1, progress=False)
    assert set(r.results.problem) == {'mine', 'line'} and set(r.results.optimizer) == {'sgd', 'my_sgd'}
    assert r.results.reached.sum() >= 1
    # the rule, run through ScratchStep in a Learner, steps exactly as fastai's SGD does on the fast path
    a,b = (run_trial(tiny(), o, 0.1, 3) for o in (SGD, own_rule(my_sgd)))
    assert a.losses == b.losses and a.losses[0] != a.losses[-1]
    # a rule that is not SGD is not SGD
    c = run_trial(tiny(), own_rule(lambda p, g, state, lr, **_: p.add_(g, alpha=-lr*0.5)), 0.1, 3)
    assert c.losses != a.losses

BAD = {'problem': (dict(problems='line,mnist'), "unknown problem 'mnist'; known: line, quadratic"),
       'opt': (dict(opts='sgd,adagrad'), "unknown optimizer 'adagrad'; known: sgd, momentum"),
       'trials': (dict(trials=0), "--trials must be >= 1, got 0"),
       'seeds': (dict(seeds=0), "--seeds must be >= 1, got 0"),
       'lrneg': (dict(lr_min=-1., lr_max=1.), "--lr_min must be > 0"),
       'lr0': (dict(lr_min=0., lr_max=1.), "--lr_min must be > 0"),
       'lrempty': (dict(lr_min=1., lr_max=0.1), "the lr range is empty"),
       'lrnan': (dict(lr_min=1e-3, lr_max=float('nan')), "--lr_max must be finite"),
       'lrhalf': (dict(lr_min=1e-3), "--lr_min and --lr_max go together"),
       'tau': (dict(tau_max=1.), "--tau_max must be > 1"),
       'emptyopts': (dict(opts=','), "--opts is empty"),
       'outfile': (dict(out='{d}/afile'), "exists and is not a directory")}

@pytest.mark.parametrize('case', BAD)
def test_bad_input(case, tmp_path):
    (tmp_path/'afile').write_text('x')
    kw,msg = BAD[case]
    kw = {k: v.format(d=tmp_path) if isinstance(v, str) else v for k,v in kw.items()}
    out,err = io.StringIO(),io.StringIO()
    rc = run_bakeoff(**{'out': str(tmp_path/'rep'), **kw}, file=out, err=err)
    assert rc == 2 and out.getvalue() == ''                            # nothing ran
    assert err.getvalue().startswith('sgd_bakeoff: error: ') and msg in err.getvalue(), err.getvalue()
    assert not (tmp_path/'rep').exists()

def test_command_help_and_exit_code(tmp_path):
    "The console script as setuptools writes it (`settings.ini`: console_scripts), run as a file"
    exe = tmp_path/'sgd_bakeoff'
    exe.write_text("import sys\nfrom sgd_callbacks.cli import sgd_bakeoff\nif __name__ == '__main__': sys.exit(sgd_bakeoff())\n")
    run = lambda *a: subprocess.run([sys.executable, str(exe), *a], capture_output=True, text=True, timeout=120)
    h = run('--help')
    assert h.returncode == 0, h.stderr
    flag = lambda o: '--' + o.replace('_', '[-_]') # fastcore 1 keeps an option's underscores, fastcore 2 writes hyphens
    for o in ('quick', 'trials', 'seeds', 'problems', 'opts', 'lr_min', 'lr_max', 'tau_max', 'out'): assert re.search(flag(o), h.stdout), o
    for o,m,t in (('trials', 'INT', 'int >= 1'), ('seeds', 'INT', 'int >= 1'), ('lr_min', 'FLOAT', 'float > 0'), ('lr_max', 'FLOAT', 'float >='),
                  ('tau_max', 'FLOAT', 'float > 1'), ('problems', 'NAMES', 'names, comma-separated'), ('opts', 'NAMES', 'names, comma-separated'),
                  ('out', 'DIR', 'a directory')):
        assert re.search(rf'{flag(o)} {m}\s+{t}', h.stdout), (o, h.stdout)       # the type a user types, on each option's line
    for args,msg in ((['--trials', '0'], "--trials must be >= 1"), (['--seeds', 'two'], "invalid int value: 'two'"),
                     (['--opts', 'sgd,nadam'], f"unknown optimizer 'nadam'; known: {', '.join(BAKEOFF_OPTS)}")):
        p = run(*args)
        assert p.returncode == 2 and 'sgd_bakeoff: error: ' in p.stderr and msg in p.stderr, p.stderr
        assert p.stdout == ''
    opts_help = ' '.join(re.split(flag('lr_min'), h.stdout.split('--opts NAMES')[-1])[0].split())  # argparse wraps the lines
    assert f"of {', '.join(BAKEOFF_OPTS)}; default {', '.join(DEFAULT_OPTS)}" in opts_help, opts_help
    assert 'lion' in opts_help and 'prodigy' in opts_help

def test_help_and_errors_list_the_registry(monkeypatch):
    "A name added to `BAKEOFF_OPTS` shows in `--opts`'s help and in the unknown-optimizer error: both read the registry"
    from fastcore.script import anno_parser
    monkeypatch.setitem(BAKEOFF_OPTS, 'mine', own_rule(my_sgd))
    h = ' '.join(anno_parser(sgd_bakeoff.__wrapped__ if hasattr(sgd_bakeoff, '__wrapped__') else sgd_bakeoff).format_help().split())
    assert f"of {', '.join(BAKEOFF_OPTS)}; default" in h and ', mine;' in h, h
    err = io.StringIO()
    assert run_bakeoff(opts='nadam', err=err, file=io.StringIO()) == 2
    assert f"known: {', '.join(BAKEOFF_OPTS)}" in err.getvalue() and 'mine' in err.getvalue()

def test_html_is_self_contained_with_every_picture(run):
    d = run[0]/'a'
    page = (d/'index.html').read_text()
    assert not re.search(r'(src|href)\s*=\s*["\'](?!data:)', page)    # nothing fetched: every src is inline data
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    pngs = sorted(d.glob('*.png'))
    # the quadratic has more than two weights
    assert {p.name for p in pngs} == {'profile.png', 'profile_bands.png', 'curves.png', 'lr_sensitivity.png',
                                      'line_paths.png'}
    assert sorted(base64.b64decode(i) for i in imgs) == sorted(p.read_bytes() for p in pngs)
    for k in ('line', 'quadratic', 'results', 'scores', 'torch', 'fastai', 'machine', 'loss &lt;= 0.08', 'winners'): assert k in page

MODERN = [n for n,d in DECLARATIONS.items() if d.bake and d.kind == 'rule'] # the rules of the registry, from their declarations

@pytest.mark.parametrize('name', MODERN)
def test_modern_rule_runs_in_a_trial(name):
    "Each modern rule of the registry trains a trial (the diabetes MLP: muon's matrices and AdamW vectors) and moves the loss"
    e = BAKEOFF_OPTS[name]
    assert isinstance(e, OptEntry) and e.opt_func.keywords['guard'] is False
    pb = tiny('diabetes', steps=12, lrs=(1e-3, 1e-1))
    lr = math.sqrt(math.prod(e.lr_range(pb.lrs)))
    a = run_trial(pb, e, lr, 5, paths=True)
    assert not a.diverged and len(a.losses) == 7 and all(map(math.isfinite, a.losses))
    assert a.losses[-1] < a.losses[0] and not torch.equal(a.ws[0], a.ws[-1])
    b = run_trial(pb, e, lr, 5, paths=True)
    assert a.losses == b.losses                                       # seeded

def test_a_rule_that_blows_up_is_recorded_diverged():
    "Unguarded, Prodigy at an absurd lr (finite gradients, non-finite weights) is a diverged trial; guarded it would stop the bake-off"
    tr = run_trial(tiny(steps=10), BAKEOFF_OPTS['prodigy'], 1e30, 1)
    assert tr.diverged and tr.hit is None

def test_lr_grid_per_optimizer():
    "Lion tunes over the problem's range ×0.1, Prodigy over its own 0.25..4, Adam over the problem's; the header says so"
    with redirect_stdout(io.StringIO()): r = bakeoff([tiny(steps=6)], ['adam', 'lion', 'prodigy'], trials=3, seeds=1, progress=False)
    lrs = r.trials[r.trials.stage == 'tune'].groupby('optimizer').lr.apply(sorted).to_dict()
    assert lrs['adam'] == pytest.approx([1e-2, math.sqrt(3e-2), 3.], rel=1e-3)
    assert lrs['lion'] == pytest.approx([1e-3, math.sqrt(3e-4), 0.3], rel=1e-3)
    assert lrs['prodigy'] == [0.25, 1., 4.]
    assert "lion = RuleOptimizer(rule=lion_rule, guard=False) (the problem's lr range × 0.1)" in r.header()[1]['optimizers']
    assert "prodigy = RuleOptimizer(rule=prodigy_rule, guard=False) (lr 0.25..4 on every problem)" in r.header()[1]['optimizers']

class Spy(nn.Module):
    "`x@w`, noting (training?, x, w) at every call"
    def __init__(self): super().__init__(); self.w,self.seen = nn.Parameter(torch.tensor([-1., 1.])),[]
    def forward(self, x): self.seen.append((self.training, x.clone(), self.w.detach().clone())); return x @ self.w

@pytest.mark.parametrize('fast', [True, False])
def test_schedulefree_is_judged_at_x(fast):
    "Every evaluation of a Schedule-Free trial sees the average x: the reference `AdamWScheduleFree`, replayed on the same batches, switched by its `eval()`"
    import schedulefree
    spies = []
    def model_fn(dls): spies.append(Spy()); return spies[-1]
    pb = Problem('spy', partial(linear_dls, noise=0., bs=10), model_fn, target=0., steps=16, every=4)
    tr = run_trial(pb, BAKEOFF_OPTS['schedulefree'], 0.1, 3, fast=fast)
    seen,a = spies[0].seen,torch.tensor([3., 2.])                  # the data: y = x@a exactly
    w = nn.Parameter(torch.tensor([-1., 1.]))
    ref = schedulefree.AdamWScheduleFree([w], lr=0.1, warmup_steps=0)
    ref.train()
    evals,gap = 0,0.
    for train,x,wt in seen:
        if train:
            assert torch.allclose(w, wt, atol=1e-6)                       # y, where the trial trains
            ((x@w - x@a)**2).mean().backward(); ref.step(); ref.zero_grad()
        else:
            ref.eval()
            assert torch.allclose(w, wt, atol=1e-6), (evals, w, wt)      # x, where the trial is judged
            ref.train(); gap = max(gap, (w.detach() - wt).abs().max().item()) # y and x apart: the switch matters
            evals += 1
    assert evals == len(tr.losses) == 5 and gap > 1e-2

def test_every_picture_gives_each_optimizer_its_own_colour():
    "The default optimizers (Lion and Prodigy were red and brown): a colour and a marker each, the same in every picture; the slowest drawn under the rest"
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex
    import sgd_callbacks.bakeoff.report # the pictures
    from sgd_callbacks.plots import line_style
    with redirect_stdout(io.StringIO()):
        r = bakeoff([tiny(steps=8), tiny('rosenbrock', steps=20, lrs=(1e-4, 1e-2))], list(DEFAULT_OPTS), trials=2, seeds=1, progress=False)
    opts = r._opts()
    assert opts == list(DEFAULT_OPTS)
    def styles(ax):
        "{optimizer: (colour, marker)} of the lines labelled with an optimizer's name"
        return {l.get_label().split()[0]: (to_hex(l.get_color()), l.get_marker()) for l in ax.lines if l.get_label().split()[0] in opts}
    figs = r.figures()
    assert set(figs) == {'profile', 'curves', 'lr_sensitivity', 'line_paths', 'rosenbrock_paths'} # every two-weight problem
    first = styles(figs['profile'].axes[0])
    assert list(first) == opts and len({m for _,m in first.values()}) == len(opts)
    assert first == {o: (s['color'], s['marker']) for o,s in r._styles().items()} # each its own, as `_styles` says
    lws = [l.get_linewidth() for l in figs['profile'].axes[0].lines if l.get_label().split()[0] in opts]
    assert len(lws) == len(opts) and min(lws) >= 0.8 # the twelfth line too is seen (its width was 0)
    figs['curves'].canvas.draw()
    for ax in figs['curves'].axes: # every legend under its axes' x label, off it and off the data
        lab,leg = ax.xaxis.label.get_window_extent(),ax.get_legend().get_window_extent()
        assert leg.y1 < lab.y0, (lab, leg)
    assert [c for c,_ in first.values()] == [line_style(i)['color'] for i in range(len(opts))] # the default ones take the first colours
    for name,fig in figs.items():
        for ax in fig.axes:
            st = styles(ax)
            assert {o: c for o,(c,_) in st.items()} == {o: first[o][0] for o in st}, (name, st)  # one colour per optimizer everywhere
    ax = figs['curves'].axes[0] # line: the last to reach the target lies lowest
    z = {l.get_label().split()[0]: l.get_zorder() for l in ax.lines if l.get_label().split()[0] in opts}
    steps = r.results[r.results.problem == 'line'].set_index('optimizer').steps_to_target.astype(float).fillna(np.inf)
    assert sorted(opts, key=z.get) == sorted(opts, key=lambda o: -steps[o])
    for f in figs.values(): plt.close(f)

def test_every_optimizer_of_the_menu_has_a_colour_and_a_marker_of_its_own():
    "All that the bake-off can run (the default 12, kron and the rest by --opts): no two alike in colour or in marker, each its own in any run, and one of yours a pair its run leaves free"
    import sgd_callbacks.bakeoff.report # the pictures
    from sgd_callbacks.bakeoff.run import BakeoffResult, QUICK_OPTS
    def styles(opts):
        "{optimizer: (colour, marker)} in the pictures of a run of `opts`"
        r = BakeoffResult.__new__(BakeoffResult); r.results = pd.DataFrame(dict(optimizer=list(opts)))
        return {o: (s['color'], s['marker']) for o,s in r._styles().items()}
    menu = styles(BAKEOFF_OPTS)
    assert list(menu) == list(BAKEOFF_OPTS) and len(menu) >= 17 and {'kron', 'soap', 'adam_mini'} <= set(menu)
    assert len({c for c,_ in menu.values()}) == len(menu), menu # no two colours alike
    assert len({m for _,m in menu.values()}) == len(menu), menu # no two markers alike
    for run in (QUICK_OPTS, DEFAULT_OPTS, ('kron', 'sgd'), ('soap', 'adam', 'lion')):
        assert styles(run) == {o: menu[o] for o in run}, run # the same pair whatever else runs
    mine = styles(('sgd', 'mypkg:SIGNUM', 'momentum'))
    assert len({c for c,_ in mine.values()}) == 3 and len({m for _,m in mine.values()}) == 3, mine
