"""Data-parallel training on several devices, with Keras 3's distribution API on the JAX backend.

    KERAS_BACKEND=jax python -m training.fit --data PHOTOS --out runs/a --devices 4

Every device holds a full copy of the model and takes an equal share of each batch; XLA
all-reduces the gradients, so a step computes what one device computes on the whole batch (up to
float round-off). `--batch-size` stays the global batch.

Several machines: run the same command on each, with the data folder on each and its own --out,
and KERAS_DISTRIBUTION_JOB_ADDRESSES (the coordinator's host:port, or all processes' comma-separated),
KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID (0 on the coordinator) set:
`keras.distribution.initialize()` reads them and calls `jax.distributed.initialize`. Every process
writes a whole run folder, the same in each; process 0's is the one to keep. Each process reads every batch and keeps
its own slice, so decoding is not spread across machines (the cached-features path reads little).
"""

from __future__ import annotations

import os

import keras
import numpy as np

# keras.distribution.initialize() reads these; set, they make this one process of a multi-machine run
MULTI_PROCESS_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                           "KERAS_DISTRIBUTION_PROCESS_ID")


def setup_devices(devices: int | str | None, batch_size: int) -> tuple[int, str]:
    """Make every model built from now on train data-parallel on `devices` devices.

    Call it before any model is built and before anything else asks JAX for its devices: variables
    are placed (replicated) when they are created, and a multi-machine run must join its cluster
    before JAX starts. One device (the default) sets nothing, so it is exactly the single-device path.

    Args:
        devices: how many devices; "all" every visible device (all processes'); None means 1, or
            all in a multi-process run.
        batch_size: the global batch; each device takes batch_size / devices of it.

    Returns:
        (the device count, a line saying what trains where).

    Raises:
        SystemExit: a backend without this path, more devices than visible, or a batch that does
            not split evenly.
    """
    multi_process = any(os.environ.get(name) for name in MULTI_PROCESS_VARIABLES)
    if (devices in (None, 1)) and not multi_process:
        return 1, "1 device"
    if keras.backend.backend() != "jax":
        # keras.distribution's TensorFlow side is a prototype (marked "DO NOT USE" in Keras 3.15), and
        # MirroredStrategy would be a second engine to keep equal to this one: one tested path.
        raise SystemExit(f"--devices {devices}: training on several devices uses Keras's distribution API, "
                         f"which needs the JAX backend (this is {keras.backend.backend()}): rerun with "
                         "KERAS_BACKEND=jax")
    import jax
    if multi_process:  # joins the cluster: must come before JAX initializes its devices
        keras.distribution.initialize()
    visible = keras.distribution.list_devices()  # every process's devices, e.g. ["gpu:0", "gpu:1"]
    processes = jax.process_count()
    count = len(visible) if devices == "all" or (devices is None and processes > 1) else (devices or 1)
    if count > len(visible):
        raise SystemExit(f"--devices {count}: only {len(visible)} visible ({', '.join(visible)}); "
                         "on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N")
    if count == 1 and processes == 1:  # "all" of one device: the plain path
        return 1, f"1 device ({visible[0]})"
    if processes > 1 and count != len(visible):
        raise SystemExit(f"--devices {devices}: a run of {processes} processes trains on all {len(visible)} "
                         "devices of all of them; pass --devices all")
    if batch_size % count:
        raise SystemExit(f"--batch-size {batch_size} does not split evenly over {count} devices: "
                         f"pass a multiple of {count} (the batch is global, each device takes an equal share)")
    # auto_shard_dataset=False: Keras would only shard a tf.data.Dataset; `share_batches` hands
    # each process its share of our PyDataset batches instead
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=visible[:count],
                                                                        auto_shard_dataset=False))
    where = f"{count} devices ({', '.join(visible[:count])})" + (f" in {processes} processes" if processes > 1 else "")
    return count, f"{where}, data-parallel: {batch_size // count} of each batch of {batch_size} per device"


def release_devices() -> None:
    """Back to single-device training (for callers that train again in the same process, as tests do)."""
    if keras.backend.backend() == "jax":
        keras.distribution.set_distribution(None)


def share_batches(*datasets: keras.utils.PyDataset) -> tuple:
    """The datasets (training, validation: PyDatasets), shaped for the devices `setup_devices` chose.

    JAX splits a batch over N devices evenly or not at all, and an epoch's last batch is usually
    short (so is one with an unreadable file skipped): each batch is rounded down to a multiple of N
    (a batch smaller than N repeats samples up to N), so at most N-1 samples of a batch sit out,
    usually only in the last batch of an epoch, and a different few each epoch as the order is
    reshuffled. In a multi-process run each process feeds its own slice of every batch. With one
    device the datasets come back untouched.
    """
    distribution = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if distribution is None:
        return datasets
    count = distribution.device_mesh.devices.size
    return tuple(EvenBatches(d, count, distribution.num_processes, distribution.data_shard_id) for d in datasets)


def even_indices(size: int, count: int) -> np.ndarray:
    """Indices of a batch of `size` rounded to a multiple of `count`: down, or up to `count` by repeating."""
    if size == 0 or size % count == 0:
        return np.arange(size)
    return np.arange(size - size % count) if size > count else np.resize(np.arange(size), count)


class EvenBatches(keras.utils.PyDataset):
    """Another PyDataset's batches with sizes a multiple of the device count, and only this
    process's slice of each in a multi-process run. Anything else (`set_epoch`, counters) is the
    wrapped dataset's."""

    def __init__(self, dataset: keras.utils.PyDataset, devices: int, processes: int = 1, process_id: int = 0):
        super().__init__(workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
                         max_queue_size=dataset.max_queue_size)
        self.dataset, self.devices, self.processes, self.process_id = dataset, devices, processes, process_id

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        batch = self.dataset[index]
        size = len(batch[0])
        if size % self.devices == 0 and self.processes == 1:
            return batch
        take = even_indices(size, self.devices)
        share = len(take) // self.processes
        take = take[self.process_id * share:(self.process_id + 1) * share]
        return tuple(np.asarray(part)[take] for part in batch)

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()

    def __getattr__(self, name):
        if name.startswith("_") or name == "dataset":  # PyDataset's own internals, or not set yet
            raise AttributeError(name)
        return getattr(self.dataset, name)
