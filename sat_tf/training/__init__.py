"""Training: the single-process Keras trainer (`trainer`) and the tf.distribute custom loop (`distributed`)."""
