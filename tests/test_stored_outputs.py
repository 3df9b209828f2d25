"""The lesson notebooks' stored outputs are what their code prints now.

Each notebook of the lesson track is executed again, cell by cell, with execnb (as `nbdev_test` does), and each
cell's text output is compared with the one stored in the file: printed text, returned values (`text/plain`), tables
(`text/html`), and which outputs are pictures. Picture bytes are not compared (matplotlib's PNG encoder is not part
of the lesson). Masked before comparing: the time column of fastai's training table (`00:03`) and memory addresses.

`#| slow` cells run only with `SGD_SLOW_OUTPUTS=1` (CI sets it after `nbdev_test --flags slow`); in the default run
their stored outputs are left as they are.

Where the outputs were stored, they are compared exactly. Elsewhere, numbers are compared within `ROUNDING_TOL` (the
words around them must match exactly): another processor's vector kernels round the last digits differently (a
loss's sixth digit, a rounding bound of 7e-08 that reads 7.4e-08). Which processor this is, the test tells from
`FINGERPRINTS`: per notebook, a hash of one forward and backward pass of the lesson's resnet34 (its loss and every
gradient, bit for bit) where the notebook was stored. The same hash here: the same kernels, so the same digits.

The resnet34 of `30_vision` trains chaotically: its convolutions round differently on another processor, and six
epochs turn that into other losses and another error rate (the first epoch's validation loss 43.5 on one processor,
16.4 on another; the error rate 0.0306 and 0.0139). So on another processor only its words are compared (the table's
columns and rows, `same_weights: True`, each learner's line), and the notebook's own asserts hold the rest: the two
learners end bit-identical, the error rate under 5%.

After re-storing a notebook, `python tests/test_stored_outputs.py NAME` records its hash.
"""
import functools, json, math, os, re, subprocess, sys
from pathlib import Path
import pytest

nbs = Path(__file__).parents[1]/'nbs'
LESSON = ['14_lesson', '13_plots', '15_sixteen_bits', '22_beyond_sgd', '26_modern_by_hand', '29_preconditioning', '30_vision', '41_compare', '44_pitfalls']
ROUNDING_TOL = dict(rel=1e-4, abs=1e-6)
CHAOTIC = {'30_vision'} # elsewhere, only their words are compared
FINGERPRINTS = Path(__file__).parent/'stored_outputs_fingerprints.json'
SLOW = os.environ.get('SGD_SLOW_OUTPUTS') == '1'

_time = re.compile(r'\b\d\d:\d\d\b')
_addr = re.compile(r'0x[0-9a-f]{6,}')
_num = re.compile(r'[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?')

def is_slow(src): return any(re.match(r'#\|\s*slow\b', l) for l in src.splitlines()[:5])

def texts(outputs):
    "What a reader reads of a cell's outputs: its text, its returned values and tables, and where pictures are"
    res = []
    for o in outputs:
        if o.get('output_type') == 'stream':
            if o.get('name') == 'stdout': res.append(''.join(o['text']))
            continue
        d = o.get('data', {})
        if 'image/png' in d or 'image/gif' in d: res.append('<picture>')
        elif 'text/html' in d: res.append(''.join(d['text/html']))
        elif 'text/plain' in d: res.append(''.join(d['text/plain']))
        if o.get('output_type') == 'error': res.append(f"{o['ename']}: {o['evalue']}")
    return _addr.sub('0x…', _time.sub('mm:ss', '\n'.join(res)))

def same_words(stored, now): return _num.sub('#', stored) == _num.sub('#', now)

def close(stored, now, rel, abs):
    "The same words, and numbers within `rel` or `abs` of each other"
    if not same_words(stored, now): return False
    return all(math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs)
               for a,b in zip(_num.findall(stored), _num.findall(now)))

_RUN = """
import json, os, sys
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
src,dest,skip = sys.argv[1],sys.argv[2],json.loads(sys.argv[3])
nb = read_nb(src)
for i in skip: nb.cells[i].source = ''
os.chdir(os.path.dirname(src))
sh = CaptureShell()
# fastai.layers calls torch.jit.script at import, deprecated by torch 2.14: not the notebook's output
sh.run_cell("import warnings; warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')")
sh.run_all(nb, exc_stop=True)
write_nb(nb, dest)
"""

_FINGERPRINT = """
import hashlib, warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
from sgd_callbacks.vision import digits_resnet34
learn = digits_resnet34(scratch=False)
xb,yb = learn.dls.one_batch()
loss = learn.loss_func(learn.model(xb), yb)
loss.backward()
h = hashlib.sha256(loss.detach().numpy().tobytes())
for p in learn.model.parameters(): h.update(p.grad.contiguous().numpy().tobytes())
print(h.hexdigest())
"""

@functools.cache
def fingerprint():
    "A hash of how this processor's kernels round: one forward and backward pass of the lesson's resnet34"
    out = subprocess.run([sys.executable, '-c', _FINGERPRINT], capture_output=True, text=True, env=kernel_env())
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()

def kernel_env():
    "The environment a notebook runs in: torch's default threads, as when the outputs were stored"
    env = {k: v for k,v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
    return {**env, 'MPLBACKEND': 'Agg'}

def stored_fingerprints(): return json.loads(FINGERPRINTS.read_text()) if FINGERPRINTS.exists() else {}

def comparison(name):
    "How `name`'s stored outputs are compared here: exactly on the processor they were stored on, else as the docstring says"
    if stored_fingerprints().get(name) == fingerprint(): return str.__eq__
    if name in CHAOTIC: return same_words
    return lambda a, b: close(a, b, **ROUNDING_TOL)

def differences(name, tmp_path):
    "The cells whose output now differs from the stored one: `(cell index, source start, stored, now)`"
    pytest.importorskip('execnb', reason="execnb comes with the dev extras (the pinned set the outputs were stored with)")
    path = nbs/f'{name}.ipynb'
    stored = json.loads(path.read_text())['cells']
    skip = [i for i,c in enumerate(stored) if c['cell_type'] == 'code' and is_slow(''.join(c['source'])) and not SLOW]
    # a process of its own, as a reader's kernel is: nothing another test or notebook changed (threads, patches, print
    # options) reaches it
    out = subprocess.run([sys.executable, '-c', _RUN, str(path), str(tmp_path/path.name), json.dumps(skip)],
                         capture_output=True, text=True, env=kernel_env())
    assert out.returncode == 0, f"{name}.ipynb did not run: {out.stderr[-2000:]}"
    now = json.loads((tmp_path/path.name).read_text())['cells']
    same = comparison(name)
    diffs = []
    for i,(old,new) in enumerate(zip(stored, now)):
        if old['cell_type'] != 'code' or i in skip: continue
        a,b = texts(old.get('outputs', [])),texts(new.get('outputs', []))
        if not same(a, b): diffs.append((i, ''.join(old['source'])[:60], a[:300], b[:300]))
    return diffs

@pytest.mark.parametrize('name', LESSON)
def test_stored_outputs_are_fresh(name, tmp_path):
    diffs = differences(name, tmp_path)
    assert not diffs, f"{name}.ipynb: {len(diffs)} cell(s) store an output their code no longer prints; the first: {diffs[0]}"

def test_lesson_notebooks_exist_and_store_outputs():
    for name in LESSON:
        cells = json.loads((nbs/f'{name}.ipynb').read_text())['cells']
        assert any(c.get('outputs') for c in cells), f"{name}.ipynb stores no output"

def test_comparison_masks_only_what_it_says():
    out = lambda t: [{'output_type': 'stream', 'name': 'stdout', 'text': [t]}]
    assert texts(out('epoch 0 00:03')) == texts(out('epoch 0 00:07'))
    assert texts(out('loss 0.25')) != texts(out('loss 0.26'))
    assert close('loss 0.25, error 0.031', 'loss 0.27, error 0.017', rel=0.25, abs=0.02)
    assert not close('loss 0.25', 'loss 0.40', rel=0.25, abs=0.02)
    assert not close('loss 0.25', 'error 0.25', rel=0.25, abs=0.02)
    assert same_words('error 0.0306 (11 of 359 wrong)', 'error 0.0139 (5 of 359 wrong)')
    assert not same_words('same_weights: True', 'same_weights: False')

def test_outputs_are_compared_exactly_only_where_they_were_stored(monkeypatch):
    here = sys.modules[__name__]
    monkeypatch.setattr(here, 'stored_fingerprints', lambda: {'14_lesson': 'here', '30_vision': 'here'})
    stored,rounded,edited = 'loss 1.4170', 'loss 1.41701', 'loss 1.4270'
    monkeypatch.setattr(here, 'fingerprint', lambda: 'here')
    assert not comparison('14_lesson')(stored, rounded) and not comparison('30_vision')(stored, rounded)
    monkeypatch.setattr(here, 'fingerprint', lambda: 'elsewhere')
    assert comparison('14_lesson')(stored, rounded) and not comparison('14_lesson')(stored, edited)
    assert comparison('30_vision')(stored, edited) and not comparison('30_vision')(stored, 'error 1.4170')

def test_the_readme_track_is_checked_here():
    "The notebooks README.md's 'Start here' sends a reader to are the ones whose stored outputs are checked here"
    start = (nbs.parent/'README.md').read_text().split('## Start here', 1)[1].split('\n## ', 1)[0]
    track = re.findall(r'\]\(nbs/([\w.]+)\.ipynb\)', start)
    assert track[0] == '14_lesson' and set(track) == set(LESSON), sorted(set(track) ^ set(LESSON))

def test_every_lesson_notebook_says_where_it_was_stored():
    assert set(stored_fingerprints()) == set(LESSON) and CHAOTIC <= set(LESSON)

if __name__ == '__main__': # after re-storing lesson notebooks (their names as arguments): record where they were stored
    fps = {**stored_fingerprints(), **{name: fingerprint() for name in sys.argv[1:]}}
    FINGERPRINTS.write_text(json.dumps(fps, indent=1, sort_keys=True) + '\n')
