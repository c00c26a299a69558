"""CharCodec's encodings: one-hot or integer, reversed or not, padded whole or per term, masked or not.
Every combination round-trips; the defaults stay the tutorial's (see test_codec.py)."""

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pipeline.codec import CharCodec, load_codec, save_codec  # noqa: E402
from pipeline.config import Experiment  # noqa: E402
from pipeline.expressions import Limits  # noqa: E402

SEED = Limits(terms=2, low=1, high=10)
BRACKETS = Limits(terms=3, low=0, high=99, ops="+-*", min_terms=2, brackets=True)
OPTIONS = list(itertools.product(["onehot", "integer"], [False, True], ["left", "per_term"], [False, True]))
EXPRESSIONS = {SEED: ["3+10", "1+1", "10+10"], BRACKETS: ["(12+7)*3", "5-99", "0*(1-2)", "99*99*99", "1+2"]}
ANSWERS = {SEED: [13, 2, 20], BRACKETS: [57, -94, 0, 970299, 3, -960300]}


def codec_of(limits, options) -> CharCodec:
    encoding, reverse, padding, mask = options
    return CharCodec(limits, encoding=encoding, reverse=reverse, padding=padding, mask=mask)


@pytest.mark.parametrize("limits", [SEED, BRACKETS], ids=["seed", "brackets"])
@pytest.mark.parametrize("options", OPTIONS, ids=["-".join(map(str, o)) for o in OPTIONS])
def test_round_trips(limits, options):
    codec = codec_of(limits, options)
    texts = EXPRESSIONS[limits]
    x = codec.encode_inputs(texts)
    assert x.shape[:2] == (len(texts), codec.in_width)
    assert codec.decode_inputs(x).tolist() == texts
    y = codec.encode_targets(ANSWERS[limits])
    assert codec.decode(y if y.ndim == 3 else y).tolist() == [str(a) for a in ANSWERS[limits]]


def test_layouts():
    codec = CharCodec(SEED)
    assert codec.layout(["3+10"]).tolist() == ["3+10"]
    # Keras: pad, then reversed
    assert codec.pad(CharCodec(SEED, reverse=True).layout(["3+10"]), 5).tolist() == [" 01+3"]
    assert CharCodec(SEED, padding="per_term").layout(["3+1"]).tolist() == [" 3+ 1"]
    per_term = CharCodec(BRACKETS, padding="per_term", reverse=True)
    assert per_term.layout(["(1+22)*3"]).tolist() == ["3 *)22+1 ("]  # "( 1+22)* 3" backwards


def test_integer_codes_put_the_pad_at_zero():
    codec = CharCodec(SEED, encoding="integer")
    # ' 3+10' -> tutorial codes [11, 3, 10, 1, 0] shifted by one: the pad space is 0 for Embedding(mask_zero)
    assert codec.encode_inputs(["3+10"]).tolist() == [[0, 4, 11, 2, 1]]
    assert codec.encode_inputs(["3+10"]).dtype == np.int32
    assert codec.encode_targets([13]).tolist() == [[1, 3]]  # answers as alphabet codes, for sparse targets
    assert codec.loss == "sparse_categorical_crossentropy" and CharCodec(SEED).loss == "categorical_crossentropy"


def test_masked_onehot_pads_are_zero_vectors():
    x = CharCodec(SEED, mask=True).encode_inputs(["3+1"])
    assert x[0, :2].sum() == 0 and (x[0, 2:].sum(axis=-1) == 1).all()
    np.testing.assert_array_equal(x[0, 2:], CharCodec(SEED).encode_inputs(["3+1"])[0, 2:])


def test_negative_answers_have_a_sign():
    codec = CharCodec(BRACKETS)
    assert codec.to_codes(["-94"], codec.out_width).shape == (1, 7)
    assert codec.decode(codec.encode_targets([-94, 970299])).tolist() == ["-94", "970299"]


@pytest.mark.parametrize("options", OPTIONS[::3], ids=["-".join(map(str, o)) for o in OPTIONS[::3]])
def test_save_load_keeps_the_encoding(tmp_path, options):
    codec = codec_of(BRACKETS, options)
    save_codec(codec, tmp_path / "codec.json")
    back = load_codec(tmp_path / "codec.json")
    assert back == codec
    assert back.limits.check(" (1 + 2) * 3") == "(1+2)*3"


@pytest.mark.parametrize("options", [("onehot", False, "left", False), ("integer", True, "per_term", True),
                                     ("onehot", True, "left", True), ("integer", False, "left", False)])
def test_seq2seq_takes_every_encoding(options):
    from pipeline.models import build_model, make_codec

    encoding, reverse, padding, mask = options
    exp = Experiment(task="t", model="seq2seq", units=(8, 8), epochs=1, batch_size=4, encoding=encoding,
                     reverse=reverse, padding=padding, mask=mask, embedding_dim=5)
    codec = make_codec(exp, BRACKETS)
    assert (codec.encoding, codec.reverse, codec.padding, codec.mask) == options
    model = build_model(exp, codec)
    x = codec.encode_inputs(EXPRESSIONS[BRACKETS])
    out = model.predict(x, verbose=0)
    assert out.shape == (len(x), codec.out_width, codec.n_symbols)
    assert model.loss == codec.loss
    if encoding == "integer":
        assert model.layers[0].__class__.__name__ == "Embedding" and model.layers[0].mask_zero == mask
    # a trained step runs with the codec's own targets
    model.fit(x, codec.encode_targets(ANSWERS[BRACKETS][: len(x)]), epochs=1, verbose=0)
