"""One figure of bench/train_step.py, measured in its own process (`train_step.py --child`): TensorFlow's or the
PyTorch copy's training step or inference pass, or the GEMM peak; printed as one JSON line."""

import contextlib
import json
import os
import resource
import statistics
import sys
import time

MIXED_POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(step, steps, after_warm_up=None):
    return _timed_in_turn({"": step}, steps, after_warm_up)[""]


def _timed_in_turn(calls, steps, after_warm_up=None):
    """{name: median seconds per call} after a warm-up call of each. Medians are robust to the bursts of a shared
    (virtual) machine, where a mean over a few steps moved by +-25 % between identical runs; the calls take turns in
    every step, so that its drift reaches all of them alike (timed one after the other, the Keras model measured
    faster than the folded network at batch 1, taking turns 4.6 % slower)."""
    for call in calls.values():
        call()  # tracing / warm-up
    if after_warm_up:
        after_warm_up()
    seconds = {name: [] for name in calls}
    for _ in range(steps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in seconds.items()}


def conv_flops(model):
    """Forward FLOPs per image of every Conv2D (2 x MACs): the network's cost, BatchNorm and adds aside."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel = layer.kernel.shape
            total += 2 * height * width * out_channels * kernel[0] * kernel[1] * kernel[2]
    return total


def random_targets(rng, args, names):
    """{task: NumPy target} of the right shapes: class labels for label-map tasks, heatmaps in [0, 1) otherwise."""
    from mtha_tf import tasks

    heat = args.input_size // 4
    targets = {}
    for task in names:
        channels = tasks.OUTPUT_CHANNELS[task]
        if task in tasks.LABEL_MAP_TASKS:
            targets[task] = rng.integers(0, channels, (args.batch_size, heat, heat))
        else:
            targets[task] = rng.random((args.batch_size, heat, heat, channels)).astype("float32")
    return targets


def compiled_tf_model(args, mode):
    """The Keras model of `args` (tasks and shapes) compiled as train.py compiles it, in `mode`: a precision (fp32,
    bf16: mixed_bfloat16, fp16: mixed_float16 with Keras' loss scaling), "+xla" for XLA; with Keras' own
    BatchNormalization where `args.batch_norm` is "keras"."""
    import keras

    from mtha_tf.config import make_config
    from mtha_tf.trainer import compile_model

    if args.batch_norm == "keras":  # the reference: Keras' layer where the model uses the fused one
        from mtha_tf.model import blocks

        blocks.FusedBatchNormalization = keras.layers.BatchNormalization
    precision, _, compiler = mode.partition("+")  # "fp16+xla": mixed_float16, the step compiled by XLA
    keras.mixed_precision.set_global_policy(MIXED_POLICIES.get(precision, "float32"))
    config = make_config("paper", tasks=args.tasks, num_stacks=args.num_stacks, features=args.features,
                         input_size=args.input_size, batch_size=args.batch_size,
                         jit_compile=compiler == "xla")  # fmt: skip
    return compile_model(config)


def tf_training_step(args, model, rng):
    """One optimizer step of `model` on random inputs and targets of the right shapes, as a call. train_on_batch
    returns the losses as NumPy, so each call waits for the device."""
    from mtha_tf import tasks
    from mtha_tf.model import output_name

    names = tasks.parse_tasks(args.tasks)
    images = rng.normal(size=(args.batch_size, args.input_size, args.input_size, 3)).astype("float32")
    per_task = random_targets(rng, args, names)
    targets = {
        output_name(task, stack, args.num_stacks): per_task[task] for task in names for stack in range(args.num_stacks)
    }
    return lambda: model.train_on_batch({"image": images}, targets)


def measure_tf(args, mode):
    import keras
    import numpy as np
    import tensorflow as tf

    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("--device=gpu, but TensorFlow sees no GPU (install tensorflow[and-cuda])")
    model = compiled_tf_model(args, mode)
    xla = mode.endswith("+xla")
    rng = np.random.default_rng(0)
    result = {"flops_per_image": conv_flops(model), "parameters": model.count_params()}
    on_gpu = args.device == "gpu"
    # Peak device memory counts from after the warm-up, as for PyTorch (autotuning tries large workspaces).
    reset_peak = (lambda: tf.config.experimental.reset_memory_stats("GPU:0")) if on_gpu else None
    if args.kind == "train":
        seconds = _timed(tf_training_step(args, model, rng), args.steps, reset_peak)
        result["images_per_s"] = args.batch_size / seconds
        if on_gpu:
            result["peak_device_gib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    else:
        from export.fold_batch_norm import fold_batch_norms

        def forward(network):
            def run(inputs):
                # One scalar of all outputs back to the host waits for the whole forward pass (on a GPU too) without
                # timing a copy of every output.
                outputs = network(inputs, training=False).values()
                return tf.add_n([tf.reduce_sum(tf.cast(y, tf.float32)) for y in outputs])

            return tf.function(run, jit_compile=xla)

        # The Keras model as trained, and the exported network (batch norms folded into the convolutions).
        networks = {"": forward(model), "folded_": forward(fold_batch_norms(model))}
        for batch in (1, 32):
            x = tf.constant(rng.normal(size=(batch, args.input_size, args.input_size, 3)), tf.float32)
            calls = {prefix: (lambda x=x, run=run: run({"image": x}).numpy()) for prefix, run in networks.items()}
            for prefix, seconds in _timed_in_turn(calls, args.steps).items():
                result[f"{prefix}batch{batch}_images_per_s"] = batch / seconds
    keras.backend.clear_session()
    return result


def measure_torch(args, mode):
    import numpy as np
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from peer_torch import MultiTaskHourglass, conv_flops_per_image

    from mtha_tf import tasks

    torch.manual_seed(0)
    if args.device == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("--device=gpu, but PyTorch sees no GPU (a CUDA build of torch is needed)")
        device, sync = "cuda", torch.cuda.synchronize
        torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks its fastest algorithms, as TF autotunes
    else:
        device, sync = "cpu", lambda: None
        torch.set_num_threads(os.cpu_count())
    names = tasks.parse_tasks(args.tasks)
    model = MultiTaskHourglass(names, args.num_stacks, args.features)
    result = {"flops_per_image": conv_flops_per_image(model, args.input_size)}
    model = model.to(device, memory_format=torch.channels_last)

    # Peak device memory counts from after the warm-up: cuDNN's autotuning tries algorithms with large workspaces.
    reset_peak = torch.cuda.reset_peak_memory_stats if device == "cuda" else None

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
    autocast = torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()
    size, batch = args.input_size, args.batch_size
    if args.kind == "train":
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.99, eps=1e-8)
        scaler = torch.amp.GradScaler(device, enabled=mode == "fp16")
        images = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
        targets = []
        for task, target in random_targets(np.random.default_rng(0), args, names).items():
            if task in tasks.LABEL_MAP_TASKS:
                targets.append(("ce", torch.from_numpy(target).to(device)))
            else:
                targets.append(("rmse", torch.from_numpy(target).permute(0, 3, 1, 2).contiguous().to(device)))
        targets = targets * args.num_stacks  # outputs come stack by stack, tasks in order

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                outputs = model(images)
            loss = 0.0
            for output, (kind, target) in zip(outputs, targets, strict=True):
                output = output.float()
                if kind == "ce":
                    loss = loss + torch.nn.functional.cross_entropy(output, target)
                else:
                    loss = loss + torch.sqrt(((output - target) ** 2).mean(dim=(1, 2, 3)) + 1e-12).mean()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            sync()

        model.train()
        result["images_per_s"] = batch / _timed(step, args.steps, reset_peak)
    else:
        model.eval()
        for count in (1, 32):
            x = torch.randn(count, 3, size, size, device=device).to(memory_format=torch.channels_last)

            def forward(x=x):
                with torch.inference_mode(), autocast:
                    model(x)
                sync()

            result[f"batch{count}_images_per_s"] = count / _timed(forward, args.steps, reset_peak)
    if device == "cuda":
        result["peak_device_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def run_one(args):
    """Child process: one measurement, printed as JSON."""
    if args.framework == "gemm":
        import gemm_peak

        result = gemm_peak.measure(args.device, args.kind.split(","))
    elif args.framework == "tf":
        if args.device == "cpu":  # as train.py trains, and as `python -m export.local_server` serves
            from mtha_tf import cpu_runtime

            if args.kind == "train":
                cpu_runtime.configure_for_training()
            else:
                cpu_runtime.configure_for_serving()
        result = measure_tf(args, args.mode)
    else:
        result = measure_torch(args, args.mode)
    result["peak_rss_gib"] = _rss_gib()
    print("RESULT " + json.dumps(result))
