"""Argument types of the bench scripts: a bad value is an argparse error naming the flag and what it expects, before
anything is built or measured (not a traceback from deep inside, nor a run that silently measures something else)."""

import argparse

from mtha_tf.tasks import parse_tasks  # plain Python: no TensorFlow imported before the scripts' process settings


def at_least(minimum):
    """An integer of at least `minimum`."""

    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {minimum}, got {text}")
        return value

    return parse


positive_int = at_least(1)


def comma_list(*allowed):
    """A comma-separated subset of `allowed` as a list ("" is the empty list)."""

    def parse(text):
        items = [item for item in text.split(",") if item]
        if unknown := [item for item in items if item not in allowed]:
            raise argparse.ArgumentTypeError(f"{','.join(unknown)}: expected a comma-separated subset of "
                                             f"{','.join(allowed)}")  # fmt: skip
        return items

    return parse


def task_list(text):
    """A non-empty comma-separated subset of the tasks (checked by the model's own `parse_tasks`), as the string the
    model builders take."""
    try:
        return ",".join(parse_tasks(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_shape_arguments(parser):
    """The network and batch a measurement runs (the paper's by default), shared by train_step.py and op_profile.py."""
    parser.add_argument("--batch_size", type=positive_int, default=5)
    parser.add_argument("--input_size", type=positive_int, default=256)
    parser.add_argument("--features", type=positive_int, default=256)
    parser.add_argument("--num_stacks", type=positive_int, default=2)
