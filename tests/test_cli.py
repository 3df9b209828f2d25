"The sgd_compare command in subprocesses: the default run, --out, every bad argument; the mismatch exit code."
import io, json, os, subprocess, sys, pytest
from pathlib import Path
from PIL import Image

def umask(): m = os.umask(0); os.umask(m); return m
def flag(name):
    "An option as the installed fastcore spells it: fastcore 1 keeps the parameter's underscores, fastcore 2 writes hyphens"
    import fastcore
    return '--' + (name if int(fastcore.__version__.split('.')[0]) < 2 else name.replace('_', '-'))

exe = Path(sys.executable).parent/'sgd_compare'
BAD = {'data': ['--data', 'mnist'], 'lr0': ['--lr', '0'], 'lrneg': ['--lr', '-1'], 'lrnan': ['--lr', 'nan'],
       'lrinf': ['--lr', 'inf'], 'epochs': ['--epochs', '0'], 'bs0': ['--bs', '0'], 'bsword': ['--bs', 'many'],
       'bsbig': ['--bs', '1000'], 'size': ['--size', '16'], 'sizesmall': ['--data', 'digits', '--size', '4'],
       'sizeword': ['--data', 'digits', '--size', 'big'], 'schedule': ['--schedule', 'cosine'], 'lrword': ['--lr', 'abc'], 'epochsword': ['--epochs', 'two'], 'outfile': ['--out', '{d}/afile'], 'outunder': ['--out', '{d}/afile/sub'],
       'opt': ['--opt', 'adagrad'], 'optkw': ['--opt', 'adam', '--k', '3'], 'rule': ['--rule', 'mine'], 'eps': ['--opt', 'adam', '--eps', 'tiny'],
       'modernkw': ['--opt', 'lion', '--beta3', '0.9'], 'modernl2': ['--opt', 'lion', '--l2'],
       'modernval': ['--opt', 'muon', flag('adjust_lr_fn'), 'sideways'], 'moderntype': ['--opt', 'ademamix', flag('t_alpha_beta3'), 'soon']}

# Every process pays fastai's import (~10 s on 2 busy cores): the console script runs for the default, --out
# runs; the bad arguments go through the same `call_parse` parser and function in one more process.
BATCH = """
import contextlib, io, json, sys
from fastcore.script import anno_parser
from sgd_callbacks.cli import sgd_compare
parser,res = anno_parser(sgd_compare.__wrapped__),{}
for k,args in json.loads(sys.argv[1]).items():
    out,err = io.StringIO(),io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            kw = vars(parser.parse_args(args)); kw.pop('pdb', None); kw.pop('xtra', None)
            sgd_compare(**kw); rc = 0
        except SystemExit as e: rc = e.code
    res[k] = (rc, out.getvalue(), err.getvalue())
print(json.dumps(res))
"""

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "Start every process at once, then collect them"
    d = tmp_path_factory.mktemp('cli'); (d/'afile').write_text('x')
    cmds = {'default': [], 'out': ['--out', str(d/'report'), '--epochs', '3']}
    cmds.update({k: [a.format(d=d) for a in v] + ([] if k.startswith('out') else ['--out', str(d/f'bad_{k}')]) for k,v in BAD.items()})
    env = dict(os.environ, MPLBACKEND='Agg')
    popen = lambda c: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    solo = ('default', 'out')
    ps = {k: popen([str(exe), *cmds[k]]) for k in solo}
    batch = popen([sys.executable, '-c', BATCH, json.dumps({k: v for k,v in cmds.items() if k not in solo})])
    res = {k: (p.wait(300), *p.communicate()) for k,p in ps.items()}
    rc,out,err = batch.wait(300),*batch.communicate()
    assert rc == 0, err
    res.update({k: tuple(v) for k,v in json.loads(out.splitlines()[-1]).items()})
    return d, res

def test_default_run(runs):
    rc,out,err = runs[1]['default']
    assert rc == 0, err
    rows = [l.split()[0] for l in out.splitlines()]
    for name in ('fastai', 'ScratchSGD', 'torch.optim.SGD', 'plain'): assert name in rows
    assert out.count('True') >= 8 and 'bit-identical' in out

def test_digits_run(monkeypatch):
    "The digits plumbing (size, metric column, one-cycle, parity, exit code) with a small CNN in resnet34's place, to stay fast"
    import types, torch
    from torch import nn
    import sgd_callbacks.cli as cli, sgd_callbacks.vision as vision
    def small(dls, arch, pretrained):
        return types.SimpleNamespace(model=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 10)))
    monkeypatch.setattr(vision, 'create_cnn', small)
    out,err = io.StringIO(),io.StringIO()
    assert cli.run_compare(data='digits', size='8', bs='64', epochs='2', file=out, err=err) == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert 'size=8 channels_last resnet34 opt=SGD bs=64' in lines[0] and '2 epochs of one_cycle' in lines[0]
    i = next(i for i,l in enumerate(lines) if l.split()[:1] == ['contender']) # after fastai's progress bars
    cols,rows = lines[i],[l.split() for l in lines[i+1:i+5]]
    assert cols.split()[:4] == ['contender', 'train_loss', 'valid_loss', 'error_rate']
    # read from the right: ... error_rate dist_opt max_dw identical first_step first_param first_dw expected epochs steps s_per_step
    assert [[r[-8], *r[-7:-5], *r[-4:-1]] for r in rows] == [['True', '-', '-', 'True', '2', '46']]*4, rows
    err_rates = {float(r[-11]) for r in rows}
    assert len(err_rates) == 1 and 0 <= err_rates.pop() < 0.9
    assert 'all 4 rows' in lines[-1]

def test_out_writes_all_files(runs):
    d,(rc,out,err) = runs[0],runs[1]['out']
    assert rc == 0, err
    files = sorted(p.name for p in (d/'report').iterdir())
    assert files == ['fit.gif', 'landscape.png', 'loss.png', 'table.csv', 'table.json']  # no temporary left
    tab = json.loads((d/'report'/'table.json').read_text())
    assert [r['identical'] for r in tab] == [True]*4 and [r['steps'] for r in tab] == [24]*4
    assert (d/'report'/'table.csv').read_text().startswith('contender,')
    for f in ('fit.gif', 'landscape.png', 'loss.png'):
        im = Image.open(d/'report'/f); assert im.size[0] > 0 and im.size[1] > 0
    assert Image.open(d/'report'/'fit.gif').n_frames > 1
    assert all(os.stat(p).st_mode & 0o044 == 0o044 & ~umask() for p in (d/'report').iterdir())  # not mkstemp's 0600

@pytest.mark.parametrize('k', list(BAD))
def test_bad_argument(runs, k):
    d,(rc,out,err) = runs[0],runs[1][k]
    assert rc == 2, (k, rc, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith('sgd_compare: error:'), err
    assert out == ''
    assert not (d/f'bad_{k}').exists() and not (d/'afile').is_dir()
    assert not [p for p in d.iterdir() if p.name.startswith('.')]  # no probe or temporary file left

def test_mismatch_exit_code(monkeypatch, tmp_path):
    "A `ScratchSGD` that really differs (its lr 1e-6 off): exit code 1, the row and its distance named, the report still written"
    import sgd_callbacks.compare as compare, sgd_callbacks.cli as cli
    real,sl,seen = compare.compare_optimizers,compare.scratch_learner,[]
    monkeypatch.setattr(compare, 'scratch_learner', lambda dls, model, lr, *a, **kw: sl(dls, model, lr*1.000001, *a, **kw))
    monkeypatch.setattr(cli, 'compare_optimizers', lambda **kw: seen.append(real(**kw)) or seen[-1])
    out,err = io.StringIO(),io.StringIO()
    assert cli.run_compare(epochs=1, out=tmp_path/'r', file=out, err=err) == 1
    (name,dw), = seen[0].mismatches()
    assert name == 'ScratchSGD' and 0 < dw < 1e-5 and 'ScratchSGD' in err.getvalue() and f'{dw:.3g}' in err.getvalue()
    assert (tmp_path/'r'/'table.csv').exists()  # the report is still written, to look at

def test_other_optimizers_and_the_lesson_rule():
    "--opt with its hyper-parameters, and --rule lesson: the header, the rows, where the lesson's rule leaves fastai's"
    import sgd_callbacks.cli as cli
    out,err = io.StringIO(),io.StringIO()
    assert cli.run_compare(opt='adam', lr='0.05', sqr_mom='0.999', eps='1e-7', epochs='2', file=out, err=err) == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert 'opt=Adam' in lines[0] and 'mom=0.9 sqr_mom=0.999 eps=1e-07' in lines[0]
    rows = {l.split()[0]: l.split() for l in lines[2:6]}
    assert list(rows) == ['fastai', 'ScratchStep', 'torch.optim.AdamW', 'plain']
    assert rows['ScratchStep'][4:6] == ['0', 'True'] and "all 2 rows that do fastai Adam's update" in lines[-1]
    out = io.StringIO()
    assert cli.run_compare(rule='lesson', epochs='3', file=out, err=err) == 0
    row = next(l.split() for l in out.getvalue().splitlines() if l.startswith('rule lesson_rule'))
    assert row[6:9] == ['False', '2', 'a'], row   # apart at step 2, in `a`, yet not a mismatch: a rule is not expected to match

def test_modern_optimizer_against_its_reference():
    "--opt lion: the authors' Lion, the rule through rule_opt (bit-identical: exit 0) and fastai's AdamW, which leaves it at step 1"
    import sgd_callbacks.cli as cli
    out,err = io.StringIO(),io.StringIO()
    assert cli.run_compare(opt='lion', lr='0.05', sqr_mom='0.98', wd='0.1', epochs='2', file=out, err=err) == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert 'opt=lion' in lines[0] and 'mom=0.9 sqr_mom=0.98 wd=0.1' in lines[0]
    rows = {l.split()[0]: l.split() for l in lines[2:5]}
    assert list(rows) == ['lion_pytorch.Lion', 'rule_opt(lion_rule)', 'fastai']
    from sgd_callbacks.all import LinearModel, linear_dls, lstsq_weights
    start = float((LinearModel(2).a.detach() - lstsq_weights(*linear_dls(bs=10, seed=42).train.dataset.tensors)).norm())
    assert rows['rule_opt(lion_rule)'][4:6] == ['0', 'True'] and float(rows['lion_pytorch.Lion'][3]) < start - 0.1 # it moved, towards a_opt
    assert rows['fastai'][7:10] == ['False', '1', 'a'] # 'fastai Adam (AdamW)' is three words and "fastai's nearest" in lines[4]
    assert "all 2 rows that do lion_pytorch.Lion's update are bit-identical to it" == lines[-1]

def test_a_modern_mismatch_exits_1(monkeypatch):
    "The rule one float32 ulp off in one weight: exit code 1, the row named"
    import torch
    import sgd_callbacks.cli as cli, sgd_callbacks.compare as compare
    from sgd_callbacks.optim.modern import lion_rule
    def lion_ulp_off(p, g, state, lr, mom=0.9, sqr_mom=0.99, wd=0., do_wd=True):
        lion_rule(p, g, state, lr, mom, sqr_mom, wd, do_wd)
        p.view(-1)[:1] = torch.nextafter(p.view(-1)[:1], torch.tensor(float('inf')))
    monkeypatch.setattr(compare.MODERN['lion'], 'rule', lion_ulp_off)
    out,err = io.StringIO(),io.StringIO()
    assert cli.run_compare(opt='lion', epochs='1', file=out, err=err) == 1
    assert 'rule_opt(lion_ulp_off) is not bit-identical to lion_pytorch.Lion' in err.getvalue()

def test_help_shows_what_to_type_for_every_option():
    import inspect
    from fastcore.script import anno_parser
    from sgd_callbacks.cli import sgd_compare
    p = anno_parser(sgd_compare.__wrapped__)
    acts = {a.dest: a for a in p._actions if a.option_strings and a.dest not in ('help', 'pdb', 'xtra')}
    assert set(acts) == set(inspect.signature(sgd_compare.__wrapped__).parameters)
    for k,a in acts.items():
        assert a.help and len(a.help.split()) > 2, k # a line of help for every option
        assert k == 'l2' or (a.metavar and a.metavar != k.upper()), k # a flag, or what to type
    assert (acts['bs'].metavar, acts['lr'].metavar, acts['epochs'].metavar) == ('{INT,full}', 'FLOAT', 'INT')
    assert '(str)' not in p.format_help()

def test_piped_progress_is_one_line_per_epoch(capsys):
    "Output that is not a terminal gets fastai's table, one line per epoch, without the bars' redraws"
    from sgd_callbacks.cli import _epoch_lines
    from sgd_callbacks.all import scratch_learner, linear_dls, LinearModel
    learn = scratch_learner(linear_dls(bs=16), LinearModel(), lr=0.1)
    with _epoch_lines(): learn.fit(3)
    out = capsys.readouterr().out
    assert '\r' not in out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ['epoch', 'train_loss', 'valid_loss'] and [l.split()[0] for l in lines[1:]] == ['0', '1', '2']

def test_piped_progress_without_logging_is_one_line_per_epoch(capsys):
    "As `compare_optimizers` fits (no logging): a line as each epoch ends"
    from sgd_callbacks.cli import _epoch_lines
    from sgd_callbacks.all import scratch_learner, linear_dls, LinearModel
    learn = scratch_learner(linear_dls(bs=16), LinearModel(), lr=0.1)
    with _epoch_lines(), learn.no_logging(): learn.fit(3)
    out = capsys.readouterr().out
    assert '\r' not in out and [l.split()[:3] for l in out.splitlines()] == [['epoch', f'{i}/3', 'done,'] for i in (1,2,3)], out

def explain_exe(d):
    "sgd_explain: the console script where this environment installed it, else one written as setuptools writes it"
    exe = Path(sys.executable).parent/'sgd_explain'
    if exe.exists(): return [str(exe)]
    (d/'sgd_explain').write_text("import sys\nfrom sgd_callbacks.cli import sgd_explain\nif __name__ == '__main__': sys.exit(sgd_explain())\n")
    return [sys.executable, str(d/'sgd_explain')]
BAD_SPECS = {'name': (['torch:Adamx', 'fastai:Adam'], "A 'torch:Adamx': torch's NAME must be one of SGD, Adam, AdamW, RMSprop"),
             'lib': (['torch:SGD', 'jax:SGD'], "B 'jax:SGD' must be LIB:NAME[,KEY=VALUE...], LIB torch or fastai"),
             'value': (['torch:AdamW,lr=fast', 'fastai:Adam'], "A: lr must be a number, got 'fast'"),
             'lr0': (['torch:AdamW', 'fastai:Adam,lr=0'], "B: lr must be > 0"),
             'tuple': (['torch:AdamW,betas=0.9', 'fastai:Adam'], "A: betas must be 2 numbers written a/b"),
             'key': (['torch:SGD,mom=0.9', 'fastai:SGD'], "A 'torch:SGD,mom=0.9': mom is not a key of torch:SGD; its keys are lr, wd"),
             'kv': (['torch:SGD,lr', 'fastai:SGD'], "A 'torch:SGD,lr': 'lr' must be KEY=VALUE"),
             'bool': (['torch:SGD,nesterov=yes', 'fastai:SGD'], "A: nesterov must be true or false"),
             'fit': (['torch:SGD', 'fastai:SGD,fit=cos'], "B: fit must be fit, fit_one_cycle or fit_flat_cos"),
             'cycle': (['torch:SGD', 'fastai:SGD,moms=0.9/0.8/0.9'], "B: moms need fit=fit_one_cycle"),
             'family': (['torch:SGD', 'fastai:Adam'], "B 'fastai:Adam' is Adam where A is SGD: another algorithm"),
             'data': (['torch:SGD', 'fastai:SGD', '--data', 'mnist'], "--data must be lesson2 or diabetes"),
             'epochs': (['torch:SGD', 'fastai:SGD', '--epochs', '0'], "--epochs")}
BATCH_EXPLAIN = BATCH.replace('sgd_compare', 'sgd_explain')

@pytest.fixture(scope='module')
def explained(tmp_path_factory):
    "The AdamW recipe against its fastai copy on diabetes, and every bad SPEC, in two processes at once"
    d = tmp_path_factory.mktemp('explain')
    env = dict(os.environ, MPLBACKEND='Agg')
    good = subprocess.Popen([*explain_exe(d), 'torch:AdamW,lr=1e-2,weight_decay=0.1', 'fastai:Adam,lr=1e-2,wd=0.1', '--data', 'diabetes',
                             '--out', str(d/'report')], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    bad = subprocess.Popen([sys.executable, '-c', BATCH_EXPLAIN, json.dumps({k: [*a, '--out', str(d/f'bad_{k}')] for k,(a,_) in BAD_SPECS.items()})],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    res = {'good': (good.wait(300), *good.communicate())}
    rc,out,err = bad.wait(300),*bad.communicate()
    assert rc == 0, err
    res.update({k: tuple(v) for k,v in json.loads(out.splitlines()[-1]).items()})
    return d, res

def test_explain_command_names_the_causes_and_writes_the_picture(explained):
    d,(rc,out,err) = explained[0],explained[1]['good']
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "a: Setup(torch.optim.AdamW(weight_decay=0.1), lr=0.01, fit='fit')" and lines[1] == "b: Setup(Adam, lr=0.01, wd=0.1, fit='fit')"
    assert [l.split()[0] for l in lines[4:8]] == ['beta2', 'eps', 'decayed_params', 'op_order'], out
    assert "with them removed: bit-identical" in lines and lines[-1] == f"wrote {d/'report'/'explain.txt'}"
    assert (d/'report'/'explain.txt').read_text() == '\n'.join(lines[:-2]) + '\n'
    im = Image.open(d/'report'/'explain.png'); assert im.size[0] > 500 and im.size[1] > 200

@pytest.mark.parametrize('k', list(BAD_SPECS))
def test_explain_bad_spec_named_before_training(explained, k):
    d,(rc,out,err) = explained[0],explained[1][k]
    assert rc == 2, (k, rc, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith('sgd_explain: error: '), err
    assert BAD_SPECS[k][1] in err, err
    assert out == '' and not (d/f'bad_{k}').exists()

def test_explain_unexplained_exits_1(monkeypatch, tmp_path):
    "A difference left unexplained (causes not searched): exit code 1, the summary says so"
    import sgd_callbacks.cli as cli, sgd_callbacks.explain as ex
    monkeypatch.setattr(ex, 'candidates', lambda ra, rb: [])
    out = io.StringIO()
    assert cli.run_explain('fastai:SGD,lr=0.1', 'fastai:SGD,lr=0.05', out=tmp_path, file=out) == 1
    assert 'unexplained' in out.getvalue() and (tmp_path/'explain.png').exists()

def test_explain_is_a_console_script():
    from configparser import ConfigParser
    cfg = ConfigParser(); cfg.read(Path(__file__).parents[1]/'settings.ini')
    assert 'sgd_explain=sgd_callbacks.cli:sgd_explain' in cfg['DEFAULT']['console_scripts'].split()

# pytest-xdist (pyproject.toml): this file's tests on one worker, so its module fixtures are built once
pytestmark = pytest.mark.xdist_group('cli')
