"README.md is kept by hand (no Quarto here): its example must run, and nbs/index.ipynb must say the same."
import json, re, subprocess, sys
from pathlib import Path

root = Path(__file__).parents[1]
readme = (root/'README.md').read_text()

def python_blocks(text): return re.findall(r"```python\n(.*?)```", text, re.S)

def test_readme_examples_run():
    "The first example ends bit-identical; the second trains a rule of one's own, Lion and Prodigy through `rule_opt`"
    blocks = python_blocks(readme)
    assert len(blocks) == 4
    out = subprocess.run([sys.executable, '-c', '\n'.join(blocks[:2])], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    first,*rules = out.stdout.strip().splitlines()
    assert first.endswith('True'), out.stdout
    assert [l.split()[0] for l in rules] == ['sign_descent', 'lion_rule', 'prodigy_rule'], out.stdout
    assert all(float(l.split()[-1]) < 1. for l in rules), out.stdout # each fitted the line (from the start's valid mse of about 7)

def test_readme_port_example_prints_what_the_readme_shows():
    "The third example ports a torch AdamW recipe to fastai; the README shows exactly what it prints"
    imports = '\n'.join(python_blocks(readme)[0].splitlines()[:2]) # `from fastai.basics import *`, `from sgd_callbacks.all import *`
    shown = re.search(r"It prints the port and its proof:\n\n```text\n(.*?)```", readme, re.S)[1]
    out = subprocess.run([sys.executable, '-c', imports + '\n' + python_blocks(readme)[2]], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout == shown, out.stdout
    assert shown.rstrip().endswith('weights moved: True')

def test_readme_explain_example_prints_what_the_readme_shows():
    "The fourth example names why torch's AdamW recipe and fastai's Adam differ, ending bit-identical; the README shows what it prints"
    blocks = python_blocks(readme)
    imports = '\n'.join(blocks[0].splitlines()[:2])
    recipe = blocks[2].splitlines()[0] # `recipe = Setup(...)`, the PyTorch recipe of the port example
    assert recipe.startswith('recipe = Setup(')
    shown = re.search(r"It prints the causes, ending bit-identical:\n\n```text\n(.*?)```", readme, re.S)[1]
    out = subprocess.run([sys.executable, '-c', '\n'.join([imports, recipe, blocks[3]])], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout == shown, out.stdout
    assert shown.split() == ['beta2', 'eps', 'decayed_params', 'op_order', '→', 'bit-identical']

def test_readme_commands():
    cmds = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    assert len(cmds) == 2
    assert 'sgd_compare' in cmds[0] and 'nbdev_test' in cmds[1] and cmds[1].endswith('pytest')
    assert cmds[1] in (root/'.ci'/'run').read_text(), ".ci/run must use the README's test command verbatim"
    assert cmds[1] in (root/'.github'/'workflows'/'test.yaml').read_text(), "the test workflow must run the README's test command"

def test_index_notebook_matches_readme():
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    src = lambda c: ''.join(c['source'])
    code = [src(c) for c in nb['cells'] if c['cell_type']=='code']
    for block in python_blocks(readme): assert block.strip() in [c.strip() for c in code]
    md = '\n'.join(src(c) for c in nb['cells'] if c['cell_type']=='markdown')
    for cmd in re.findall(r"```sh\n(.*?)\n```", readme, re.S): assert cmd in md

def test_index_notebook_says_what_readme_says():
    "Every paragraph of README.md's prose is on the front page notebook too (whitespace aside)"
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    norm = lambda s: ' '.join(s.split())
    md = norm('\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type']=='markdown'))
    prose = re.sub(r"```.*?```", '', readme, flags=re.S).replace('](nbs/', '](') # pictures: the front page is in nbs/
    paras = [norm(p) for p in prose.split('\n\n') if p.strip() and not p.startswith('# ')]
    missing = [p for p in paras if p not in md]
    assert not missing, missing[:3]
