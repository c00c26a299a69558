"""One trial of a sweep: an experiment's configuration trained and scored with the pipeline's own code (what
`adder train` and `adder evaluate` compute), in whatever process or machine runs it. It reads nothing from
disk and logs nothing: the splits come in, the figures go out, and the sweep records them."""

from __future__ import annotations

import time

from pipeline import backend, device
from pipeline.config import Params
from pipeline.problems import Problems


def run_trial(params: Params, exp_name: str, splits: dict[str, Problems]) -> dict:
    """Trains exp_name under its one seed on splits['train'] (scored each epoch on 'val'), then scores it on
    'test': the figures, the learning curve and which test problems it got right (for the studies)."""
    backend.use(params.backend)
    device.require_requested_gpu(params.backend, device.current())
    import keras

    from pipeline.evaluate import predict_answers, score
    from pipeline.seeds import correct_text
    from pipeline.train import train

    keras.backend.clear_session()  # a worker runs trial after trial: each starts from nothing
    exp = params.experiment(exp_name)
    seed = params.seeds_of(exp_name)[0]
    started = time.perf_counter()
    trained = train(exp, params.tasks[exp.task], splits["train"], splits["val"], seed)
    test = splits["test"]
    predicted = predict_answers(trained.model, trained.codec, test.text)
    history = trained.history
    figures = {**score(predicted, test.answer, trained.codec), "train_seconds": trained.train_seconds,
               "val_exact_match": history[-1]["val_exact_match"] if history else 0.0,
               "parameters": trained.model.count_params()}
    return {"metrics": figures, "history": history, "correct": correct_text(predicted, test.answer),
            "seconds": time.perf_counter() - started, "device": device.current().summary}
