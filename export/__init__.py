"""Export, installed as `sat_tf.export`: SavedModel for TF Serving and TFLite for phones."""
