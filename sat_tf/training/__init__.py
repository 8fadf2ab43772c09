"""Training: `model.fit` of the Captioner under any tf.distribute strategy (`trainer`), its work-dir callbacks
(`callbacks`) and strategy construction (`strategy`)."""
