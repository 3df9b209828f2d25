"""Adam-mini as a rule: 50 steps against the authors' `adam_mini.Adam_mini` on an MLP (one second moment per tensor, per
row, per bias weight) and a small attention model (per head), with and without weight decay, weights and both moments
bit for bit; the same in a `Learner` through `ParamNames` and `AdamMiniNamed`, and through `compare_optimizers`;
the partition by name; unnamed parameters; bad input."""
import copy, math
import pytest, torch
from torch import nn
from fastai.basics import Learner, OptimWrapper, CrossEntropyLossFlat, partial, set_seed
import fastai.callback.schedule # noqa: F401 (fit_one_cycle)
from adam_mini import Adam_mini
from sgd_callbacks.loaders import tensor_dls
from sgd_callbacks.seeding import EpochShuffle
from sgd_callbacks.weights import same_weights
from sgd_callbacks.compare import compare_optimizers
from sgd_callbacks.optim.step import RuleError
from sgd_callbacks.scratch import mse
from sgd_callbacks.optim.step import rule_opt
from sgd_callbacks.optim.adam_mini import adam_mini_rule, adam_mini_block, ParamNames, AdamMiniNamed

class Attn(nn.Module):
    "Attention over tokens, named as Llama's: per head (q, k), per row (embed, v, o, mlp, lm_head), whole (pos)"
    def __init__(self, vocab=11, dim=8, n_heads=2, seq=6):
        super().__init__()
        self.n_heads,self.pos = n_heads,nn.Parameter(torch.randn(seq, dim)*0.1)
        self.embed,self.norm = nn.Embedding(vocab, dim),nn.LayerNorm(dim)
        self.q_proj,self.k_proj,self.v_proj,self.o_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(dim, 2*dim), nn.ReLU(), nn.Linear(2*dim, dim))
        self.lm_head = nn.Linear(dim, vocab, bias=False)
    def forward(self, x):
        h = self.norm(self.embed(x) + self.pos)
        b,t,d = h.shape
        q,k,v = (f(h).view(b, t, self.n_heads, -1).transpose(1, 2) for f in (self.q_proj, self.k_proj, self.v_proj))
        a = torch.softmax(q @ k.transpose(-2, -1)/math.sqrt(d//self.n_heads), -1) @ v
        h = h + self.o_proj(a.transpose(1, 2).reshape(b, t, d))
        return self.lm_head(h + self.mlp(h))

class NamedMLP(nn.Module):
    "Matrices the authors share per row (`linear`, `output`), biases per weight, and a `scale` per tensor"
    def __init__(self, n_in=10, h=16):
        super().__init__()
        self.linear1,self.output,self.scale = nn.Linear(n_in, h),nn.Linear(h, 1),nn.Parameter(torch.ones(h))
    def forward(self, x): return self.output(torch.relu(self.linear1(x))*self.scale).squeeze(-1)

def seq_mlp(n_in=10): return nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1))

g0 = torch.Generator().manual_seed(0)
XT = torch.randint(0, 11, (64, 6), generator=g0)
XR,YR = torch.randn(64, 10, generator=g0),torch.randn(64, generator=g0)
def first_token_loss(m, i): return CrossEntropyLossFlat()(m(XT[i]), XT[i, :1].expand(-1, 6)) # each row's first token
MODELS = dict(attn=(Attn, {'dim': 8, 'n_heads': 2}, first_token_loss),
              mlp=(NamedMLP, {}, lambda m,i: mse(m(XR[i]), YR[i])),
              seq=(seq_mlp, {}, lambda m,i: mse(m(XR[i]).squeeze(-1), YR[i])))

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Tiny tensors on a busy machine: two torch threads waiting on each other took 8.4 s for ten steps, one thread 0.3 s"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def v_of(st): return st.get('v', st.get('vmean'))

def stepped(model, wd, steps=50, lr=1e-2, names=True):
    "`steps` steps of the authors' `Adam_mini` and of `rule_opt(adam_mini_rule)` (names in its state), the same batches"
    make,hp,loss = MODELS[model]
    set_seed(0); m0 = make()
    theirs,ours = copy.deepcopy(m0),copy.deepcopy(m0)
    ref = Adam_mini(theirs.named_parameters() if names else [('', p) for p in theirs.parameters()], lr=lr,
                    weight_decay=wd, verbose=False, **hp)
    opt = rule_opt(adam_mini_rule, **hp)(list(ours.parameters()), lr=lr, wd=wd)
    if names:
        for n,p in ours.named_parameters(): opt.state[p]['name'] = n
    for s in range(steps):
        i = torch.arange(16) + 16*(s % 4)
        for m,o in ((theirs, ref), (ours, opt)):
            loss(m, i).backward(); o.step(); o.zero_grad()
    for p,q in zip(m0.parameters(), ours.parameters()): assert not torch.equal(p, q)  # every parameter moved
    return theirs,ours,ref,opt

@pytest.mark.parametrize('wd', [0., 0.1])
@pytest.mark.parametrize('model', list(MODELS))
def test_fifty_steps_match_the_authors_weights_and_moments(model, wd):
    theirs,ours,ref,opt = stepped(model, wd)
    for (n,p),q in zip(theirs.named_parameters(), ours.parameters()):
        st,mine = ref.state[p],opt.state[q]
        assert torch.equal(p, q), n
        assert torch.equal(v_of(st), mine['sqr_avg']), n                 # the second moment, one value per block
        assert torch.equal(st['m'].view(q.shape), mine['grad_avg']), n  # the first moment (a head's is stored as rows)

def test_the_models_cover_every_block():
    "Each block of the partition is stepped by some test model, so each branch of the rule is checked"
    seen = {adam_mini_block(n) for make,*_ in MODELS.values() for n,_ in make().named_parameters()}
    assert seen == {'adam', 'head', 'row', 'whole'}

def test_decay_spares_norms_and_biases():
    "One step with and without wd (the same gradient): the authors' exemption by name (norm, ln, bias) is in the rule"
    decayed,_,_,_ = stepped('attn', 0.1, steps=1)
    plain,_,_,_ = stepped('attn', 0., steps=1)
    d,p = dict(decayed.named_parameters()),dict(plain.named_parameters())
    assert not torch.equal(d['mlp.0.weight'], p['mlp.0.weight'])
    assert torch.equal(d['q_proj.bias'], p['q_proj.bias']) and torch.equal(d['norm.weight'], p['norm.weight'])

def test_the_partition_is_the_authors():
    names = {'h.0.attn.q_proj.weight': 'head', 'h.0.attn.KEY.weight': 'head', 'h.0.attn.q_proj.bias': 'adam',
             'wte.weight': 'row', 'h.0.mlp.c_fc.weight': 'row', 'lm_head.weight': 'row', 'ln_f.weight': 'whole',
             '0.weight': 'whole', 'network.0.weight': 'row'} # 'wo' is in 'network': a fragment matches anywhere
    assert {n: adam_mini_block(n) for n in names} == names

def test_unnamed_parameters_share_one_moment_per_tensor_and_warn():
    "Without `ParamNames` every parameter is the authors' catch-all, as `Adam_mini` with every name ''"
    with pytest.warns(UserWarning, match='add `ParamNames'):
        theirs,ours,_,opt = stepped('seq', 0.1, steps=10, names=False)
    for p,q in zip(theirs.parameters(), ours.parameters()):
        assert torch.equal(p, q) and opt.state[q]['sqr_avg'].numel() == 1

# ---- in a Learner: the rule with `ParamNames`, against the authors' class behind `AdamMiniNamed`

def fitted(opt_func, model, wd, names=True):
    make,hp,_ = MODELS[model]
    set_seed(0); m = make()
    x,y = (XT,XT[:, :1].expand(-1, 6).contiguous()) if model == 'attn' else (XR,YR)
    learn = Learner(tensor_dls(x, y, bs=8, seed=0), m, loss_func=CrossEntropyLossFlat() if model == 'attn' else mse,
                    opt_func=opt_func(**hp), lr=1e-2, wd=wd, cbs=[EpochShuffle(0)] + [ParamNames()]*names)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(8) # 7 batches an epoch: 56 steps
    return learn

@pytest.mark.parametrize('wd', [0., 0.1])
@pytest.mark.parametrize('model', ['attn', 'mlp'])
def test_in_a_learner_with_one_cycle(model, wd):
    ours = fitted(partial(rule_opt, adam_mini_rule), model, wd)
    theirs = fitted(lambda **hp: partial(OptimWrapper, opt=partial(AdamMiniNamed, **hp)), model, wd)
    assert ours.train_iter == 56 and same_weights(ours.model, theirs.model)
    for p,q in zip(ours.model.parameters(), theirs.model.parameters()):
        assert torch.equal(ours.opt.state[p]['sqr_avg'], v_of(theirs.opt.opt.state[q]))
    with pytest.warns(UserWarning, match='add `ParamNames'):
        unnamed = fitted(partial(rule_opt, adam_mini_rule), model, wd, names=False)
    assert not same_weights(ours.model, unnamed.model) # the names choose the blocks

def test_compare_optimizers_runs_it_against_the_authors():
    res = compare_optimizers(opt='adam_mini', model_fn=lambda dls: NamedMLP(2, 4), epochs=3, lr=0.01, wd=0.1)
    rows = res.df.set_index('contender')
    assert rows.loc['sgd_callbacks.optim.adam_mini.AdamMiniNamed', 'identical'] # the first row: the reference
    assert rows.loc['rule_opt(adam_mini_rule)', 'identical'] and not rows.loc['fastai Adam (AdamW)', 'identical']

# ---- bad input

def test_a_head_that_does_not_divide_says_so():
    opt = rule_opt(adam_mini_rule, dim=8, n_heads=3)([nn.Parameter(torch.ones(8, 8))], lr=1e-3)
    p = opt.param_lists[0][0]
    opt.state[p]['name'],p.grad = 'q_proj.weight',torch.ones(8, 8)
    with pytest.raises(RuleError, match='`n_heads` dividing dim'): opt.step()
    opt = rule_opt(adam_mini_rule, dim=4, n_heads=2)([nn.Parameter(torch.ones(5, 5))], lr=1e-3)
    p = opt.param_lists[0][0]
    opt.state[p]['name'],p.grad = 'k_proj.weight',torch.ones(5, 5)
    with pytest.raises(RuleError, match='8 weights each, but it has 25'): opt.step()

def test_a_vector_named_as_a_matrix_says_so():
    opt = rule_opt(adam_mini_rule)([nn.Parameter(torch.ones(4))], lr=1e-3)
    p = opt.param_lists[0][0]
    opt.state[p]['name'],p.grad = 'mlp.norm.weight',torch.ones(4)
    with pytest.raises(RuleError, match='per row of `mlp.norm.weight`.*1-D'): opt.step()
