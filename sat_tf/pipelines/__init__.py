"""Data pipelines, installed as `sat_tf.pipelines`: dataset readers, feature extraction to TFRecord shards and
the streaming tf.data input of training and evaluation."""
