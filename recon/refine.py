"""Feature matching: refine a reconstruction by gradient descent until the encoder sees the same features.

The decoder makes one fast guess. Someone who also holds the encoder (a white-box attacker in split
inference, say) can push that guess further: change the pixels until encoding them gives back the
features they were handed (Mahendran & Vedaldi 2015, started from the decoder's output). Whether that
brings the image closer to the original tells how much of it the features still pin down.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

from recon.imageio import checked_image, to_float
from recon.pipeline import Reconstructor


def feature_scale(model: Reconstructor) -> np.ndarray:
    """Per-channel RMS the decoder normalizes features by (1 where the config has none)."""
    return np.asarray(model.config.feature_scale or 1.0, np.float32)


def feature_matching(model: Reconstructor, features: np.ndarray, start: np.ndarray, steps: int = 100,
                     learning_rate: float = 2e-3, every: int = 1) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield (step, image, relative feature error) at step 0 and every `every` steps up to `steps`.

    Adam on the pixels, kept in [0,1], minimizing the mean squared difference between the encoder's
    features of the image and `features`, each channel divided by its RMS on the training data (the
    decoder's own normalization), so no channel dominates. The error is reported relative to the
    target's mean square: 0.01 means the features match to 1% of their energy.

    Example:
        >>> rec = model.reconstruct(image)
        >>> for step, refined, error in feature_matching(model, rec.features, rec.output, every=25):
        ...     print(step, error, image_metrics(rec.input, refined)["psnr"])
    """
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(f"feature matching needs the TensorFlow backend, not {keras.backend.backend()}")
    import tensorflow as tf

    if start.shape[:2] != tuple(model.config.image_size_of(n) for n in features.shape[:2]):
        raise ValueError(f"start image {start.shape[:2]} does not match features {features.shape[:2]} "
                         f"at stride {model.config.stride}")
    scale = feature_scale(model)
    target = tf.constant((features / scale)[None], tf.float32)
    target_energy = float(tf.reduce_mean(tf.square(target)))
    image = tf.Variable(to_float(checked_image(start, "start image"))[None])
    optimizer = keras.optimizers.Adam(learning_rate)

    def feature_error():
        # float32 whatever the encoder computes in (a bfloat16 model still gets float32 pixel updates)
        features = tf.cast(model.encoder(image, training=False), tf.float32)
        return tf.reduce_mean(tf.square(features / scale - target))

    @tf.function(reduce_retracing=True)
    def step():
        with tf.GradientTape() as tape:
            loss = feature_error()
        optimizer.apply_gradients([(tape.gradient(loss, image), image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))
        return loss

    yield 0, image.numpy()[0], float(feature_error()) / target_energy
    for n in range(1, steps + 1):
        step()
        if n % every == 0 or n == steps:
            yield n, image.numpy()[0], float(feature_error()) / target_energy


def feature_error(model: Reconstructor, image: np.ndarray, features: np.ndarray) -> float:
    """Relative feature error of `image` against `features`, measured as feature_matching measures it."""
    scale = feature_scale(model)
    target = features / scale
    # the Keras encoder that feature matching descends through (an "int8" model's int8 copy would differ)
    features_now = keras.ops.convert_to_numpy(model.encoder(to_float(checked_image(image))[None], training=False))
    return float(np.mean(np.square(features_now[0].astype(np.float32) / scale - target)) / np.mean(np.square(target)))


def refine(model: Reconstructor, features: np.ndarray, start: np.ndarray, steps: int = 100,
           learning_rate: float = 2e-3) -> tuple[np.ndarray, float]:
    """The image after `steps` of feature matching, and its relative feature error."""
    *_, (_, image, error) = feature_matching(model, features, start, steps, learning_rate, every=max(steps, 1))
    return image, error
