"""Decoders fed their own previous output (attention, transformer): token codec, shapes, greedy decoding."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pipeline.codec import Limits, TokenCodec  # noqa: E402
from pipeline.config import Experiment  # noqa: E402
from pipeline.decoding import by_passes, outputs  # noqa: E402
from pipeline.evaluate import predict_answers  # noqa: E402
from pipeline.models import build_model, make_codec  # noqa: E402

ADD3 = Limits(2, 0, 999)


def test_targets_least_significant_first_then_end():
    codec = TokenCodec(ADD3)
    assert codec.out_steps == 5
    targets = codec.encode_targets(np.array([1998, 7]))
    end = TokenCodec.END
    assert targets.tolist() == [[8, 9, 9, 1, end], [7, end, end, end, end]]
    assert codec.decoder_inputs(targets)[:, 0].tolist() == [TokenCodec.START] * 2
    assert codec.decoder_inputs(targets)[0, 1:].tolist() == [8, 9, 9, 1]


def test_decode_reverses_and_stops_at_end():
    codec = TokenCodec(ADD3)
    tokens = np.array([[8, 9, 9, 1, 11], [7, 11, 3, 3, 11]])
    assert codec.decode(np.eye(13)[tokens]).tolist() == ["1998", "7"]


class Oracle:
    """A stand-in decoder that answers every step with the true next token (to test greedy decoding alone)."""

    def __init__(self, codec, answers):
        self.targets = codec.encode_targets(answers)

    def predict_on_batch(self, inputs):
        return np.eye(13, dtype=np.float32)[self.targets]


def test_greedy_decoding_with_an_oracle_model():
    codec = TokenCodec(ADD3)
    texts, answers = np.array(["999+999", "3+4", "120+5"]), np.array([1998, 7, 125])
    assert predict_answers(Oracle(codec, answers), codec, texts).tolist() == ["1998", "7", "125"]


@pytest.mark.parametrize("model, units", [("attention", (16,)), ("transformer", (16,))])
def test_decoder_models_shapes(model, units):
    exp = Experiment(task="add3", model=model, units=units, epochs=1, batch_size=8, embedding_dim=8)
    codec = make_codec(exp, ADD3)
    assert isinstance(codec, TokenCodec)
    net = build_model(exp, codec)
    (x, previous), y = codec.training_pair(np.array(["12+50", "999+1"]), np.array([62, 1000]))
    assert net.predict([x, previous], verbose=0).shape == (2, codec.out_steps, codec.out_symbols)
    assert predict_answers(net, codec, np.array(["12+50"])).shape == (1,)


@pytest.mark.parametrize("units, answer, unrolled", [((16,), "reversed", 8), ((16, 16), "plain", 8),
                                                     ((16,), "reversed", 0)])  # 0: the loop of long answers
def test_transformer_decodes_with_cached_keys_as_by_whole_passes(units, answer, unrolled, monkeypatch):
    import keras

    from pipeline.kinds import transformer

    monkeypatch.setattr(transformer, "UNROLLED", unrolled)
    keras.utils.set_random_seed(0)
    exp = Experiment(task="add3", model="transformer", units=units, epochs=1, batch_size=8, answer=answer)
    codec = make_codec(exp, ADD3)
    net = build_model(exp, codec)
    rng = np.random.default_rng(0)
    x = codec.encode_inputs(np.array([f"{a}+{b}" for a, b in rng.integers(0, 1000, (300, 2))]))
    cached, passes = outputs(net, codec, x), by_passes(net, codec, x)
    assert isinstance(transformer.greedy(net, codec), transformer.CachedGreedy)
    assert (cached.argmax(-1) == passes.argmax(-1)).all()
    np.testing.assert_allclose(cached, passes, atol=1e-5)


def test_transformer_units_validated():
    with pytest.raises(ValueError, match="transformer"):
        Experiment(task="add3", model="transformer", units=(30,), epochs=1, batch_size=8)


def test_token_codec_saves_and_loads_as_itself(tmp_path):
    from pipeline.codec import load_codec, save_codec

    save_codec(TokenCodec(ADD3), tmp_path / "codec.json")
    assert type(load_codec(tmp_path / "codec.json")) is TokenCodec


def test_plain_answers_most_significant_first():
    codec = TokenCodec(ADD3, answer="plain")
    end = TokenCodec.END
    assert codec.encode_targets(np.array([1998, 7])).tolist() == [[1, 9, 9, 8, end], [7, end, end, end, end]]


OPS = Limits(2, 0, 99, "+-*")
WORKED = np.array(["0282+1410", ""])


def test_steps_targets_reverse_every_number_and_end_with_the_answer():
    codec = TokenCodec(OPS, answer="steps").sized_for(np.array([1692, -5]), WORKED)
    assert codec.out_steps == len("0282+1410;1692") + 1
    targets = codec.encode_targets(np.array([1692, -5]), WORKED)
    written = "".join(codec.symbols[t] for t in targets[0, :-1])
    assert written == "2820+0141;2961"
    assert targets[1].tolist()[:3] == [TokenCodec.MINUS, 5, TokenCodec.END]


def test_steps_greedy_decoding_gives_the_answer_and_the_worked_steps():
    codec = TokenCodec(OPS, answer="steps").sized_for(np.array([1692, -5]), WORKED)
    targets = codec.encode_targets(np.array([1692, -5]), WORKED)

    class StepsOracle:
        def predict_on_batch(self, inputs):
            return np.eye(codec.out_symbols, dtype=np.float32)[targets]

    written = outputs(StepsOracle(), codec, codec.encode_inputs(np.array(["47*36", "3-8"])))
    assert codec.decode(written).tolist() == ["1692", "-5"]
    assert codec.worked(written).tolist() == WORKED.tolist()
    assert codec.writes_steps and not TokenCodec(OPS).writes_steps


def test_steps_codec_saves_and_loads_with_its_length(tmp_path):
    from pipeline.codec import load_codec, save_codec

    codec = TokenCodec(OPS, answer="steps").sized_for(np.array([1692]), WORKED[:1])
    save_codec(codec, tmp_path / "codec.json")
    assert load_codec(tmp_path / "codec.json") == codec


def test_teacher_forced_exact_match_is_greedy_exact_match():
    """A stand-in decoder that writes the true next token after a true prefix (END after any other), except
    a wrong second token for every third problem: one teacher-forced pass and greedy decoding token by
    token find the same problems right."""
    codec = TokenCodec(ADD3)
    pairs = [(a, b) for a in range(0, 300, 7) for b in (5, 68)]
    texts, answers = np.array([f"{a}+{b}" for a, b in pairs]), np.array([a + b for a, b in pairs])
    x, targets = codec.encode_inputs(texts), codec.encode_targets(answers)
    written = {row.tobytes(): target for row, target in zip(x, targets)}
    for row in x[::3]:
        written[row.tobytes()] = np.concatenate([written[row.tobytes()][:1], [9 - written[row.tobytes()][1] % 10],
                                                 written[row.tobytes()][2:]])

    class PrefixDecoder:
        def predict_on_batch(self, inputs):
            rows, fed = inputs
            outputs = np.zeros((len(rows), codec.out_steps, codec.out_symbols), np.float32)
            for i, row in enumerate(rows):
                target = written[row.tobytes()]
                true_prefix = np.cumprod(fed[i] == codec.decoder_inputs(target[None])[0]).astype(bool)
                outputs[i, np.arange(codec.out_steps), np.where(true_prefix, target, codec.END)] = 1
            return outputs

    greedy = np.mean(predict_answers(PrefixDecoder(), codec, texts) == answers.astype(str))
    assert greedy == pytest.approx(1 - len(x[::3]) / len(x))
    assert codec.forced_exact_match(PrefixDecoder(), texts, answers) == greedy


def test_teacher_forced_exact_match_counts_a_target_too_long_to_write_as_wrong():
    codec = TokenCodec(OPS, answer="steps", out_length=5)  # room for '-5' but not '0282+1410;1692'
    short = codec.encode_targets(np.array([-5]), WORKED[1:])

    class Oracle:
        def predict_on_batch(self, inputs):
            return np.eye(codec.out_symbols, dtype=np.float32)[np.repeat(short, len(inputs[0]), axis=0)]

    assert codec.forced_exact_match(Oracle(), np.array(["47*36", "3-8"]), np.array([1692, -5]), WORKED) == 0.5
