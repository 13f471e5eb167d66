"""Target codecs: `encode` (labels -> training targets, in tf.data) and `decode` (network outputs -> joints or maps)."""
