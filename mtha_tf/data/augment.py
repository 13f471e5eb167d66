"""Training augmentation as SURREAL/Newell sample it, drawn with stateless ops from a per-example seed."""

import tensorflow as tf


def sample_augmentation(seed):
    """seed: int32/int64 [2] -> dict(scale_factor, rotation (deg), flip (bool), colour_gain [3]).

    scale x 2^clip(N(0, 0.25), +-0.5); rotation N(0, 30) deg clipped to +-60, applied with probability 0.4;
    horizontal flip with probability 0.5; per-channel colour gain U(0.6, 1.4).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    scale = tf.clip_by_value(tf.random.stateless_normal([], seeds[0], stddev=0.25), -0.5, 0.5)
    rotation = tf.clip_by_value(tf.random.stateless_normal([], seeds[1], stddev=30.0), -60.0, 60.0)
    rotate = tf.random.stateless_uniform([], seeds[2]) < 0.4
    return {
        "scale_factor": tf.pow(2.0, scale),
        "rotation": tf.where(rotate, rotation, 0.0),
        "flip": tf.random.stateless_uniform([], seeds[3]) < 0.5,
        "colour_gain": tf.random.stateless_uniform([3], seeds[4], 0.6, 1.4),
    }


def no_augmentation():
    """The identity: what evaluation uses."""
    return {
        "scale_factor": tf.constant(1.0),
        "rotation": tf.constant(0.0),
        "flip": tf.constant(False),
        "colour_gain": tf.ones([3]),
    }
