"""Training: features -> `Captioner.fit` under any tf.distribute strategy -> a work dir of scored checkpoints.

    trainer.py          `python -m sat_tf.train`'s library: prepare the work dir and features, fit, keep the best
    workdir.py          the work dir's layout (config.json, vocab.txt, checkpoints, best/, logs) and loading a
                        trained Captioner (or an ensemble) from it: what evaluate, caption and export read
    callbacks.py        dev scoring, best model, early stopping, NaN stop, history, TensorBoard, epoch checkpoints
    strategy.py         building the tf.distribute strategy, and who the chief is
    warm_start.py       starting from another work dir's or a preset's weights (`TrainConfig.init_from`)
    weight_average.py   the moving average of the weights that is scored and kept
    report.py           what the command prints at the end
"""
