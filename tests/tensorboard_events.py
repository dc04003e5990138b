"""Reads the scalars of a directory's TensorBoard event files (TFRecord framing: length, its
CRC, the serialized ``Event``, its CRC), with tensorboardX's own protobuf classes."""

import glob
import os
import struct


def scalars(directory):
    """``{tag: [(step, value), ...]}`` over every event file in ``directory``."""
    from tensorboardX.proto import event_pb2

    found = {}
    for path in sorted(glob.glob(os.path.join(directory, "**", "events.out.tfevents.*"), recursive=True)):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, round(value.simple_value, 6)))
    return found
