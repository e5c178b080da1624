"""A small, dependency-free reader for Caffe's ``.caffemodel`` files.

A ``.caffemodel`` is one serialized ``caffe.NetParameter`` protocol-buffer message.
Only the parts that hold learned weights are decoded; everything else is skipped.

Protobuf wire format (what this reader relies on):

* a message is a sequence of fields, each starting with a varint key
  ``(field_number << 3) | wire_type``;
* wire types: 0 varint, 1 fixed64 (8 bytes, little-endian), 2 length-delimited
  (a varint byte count, then the bytes: strings, sub-messages, packed arrays),
  5 fixed32 (4 bytes, little-endian); 3/4 (groups) are obsolete and absent from caffe.proto;
* a varint carries 7 bits per byte, least significant group first; a set high bit
  means another byte follows;
* a repeated number field may be *packed* (one length-delimited field holding all
  values back to back) or not (one field per value); a reader accepts both, even mixed.

caffe.proto field numbers used (checked against BVLC's caffe.proto):

=================  ==========================================================
NetParameter       layer = 100 (LayerParameter), layers = 2 (V1LayerParameter, legacy)
LayerParameter     name = 1 (string), blobs = 7 (BlobProto)
V1LayerParameter   name = 4 (string), blobs = 6 (BlobProto)
BlobProto          shape = 7 (BlobShape), data = 5 (float), double_data = 8 (double),
                   legacy 4-D shape num = 1, channels = 2, height = 3, width = 4 (int32)
BlobShape          dim = 1 (int64)
=================  ==========================================================

V0 layers (nested in a V1 layer as field 1, from Caffe's first months) are not read;
the published bvlc_alexnet.caffemodel uses V1 ``layers``.
"""
from __future__ import annotations

import os

import numpy as np

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class CaffeModelError(ValueError):
    """The bytes are not a well-formed caffemodel (truncated, corrupt, or not one at all)."""


def read_varint(buf, pos):
    """Decode the varint starting at ``buf[pos]``; returns (value, position after it)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise CaffeModelError(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:  # a varint has at most 10 bytes
            raise CaffeModelError(f"varint longer than 10 bytes ending at byte {pos}")


def iter_fields(buf):
    """Yield (field_number, wire_type, value) for each field of the message in ``buf``.

    ``value`` is an int for varints and a zero-copy memoryview of the payload for
    fixed64, fixed32 and length-delimited fields.
    """
    buf = memoryview(buf)
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        else:
            if wire == LENGTH_DELIMITED:
                size, pos = read_varint(buf, pos)
            elif wire in (FIXED64, FIXED32):
                size = 8 if wire == FIXED64 else 4
            else:
                raise CaffeModelError(f"unsupported wire type {wire} (field {number}) at byte {start}")
            if pos + size > len(buf):
                raise CaffeModelError(f"truncated: field {number} at byte {start} needs {size} bytes, "
                                      f"{len(buf) - pos} remain")
            value = buf[pos:pos + size]
            pos += size
        if number == 0:
            raise CaffeModelError(f"field number 0 at byte {start}: not a protobuf message")
        yield number, wire, value


def _expect(wire, allowed, what):
    if wire not in allowed:
        raise CaffeModelError(f"{what} has wire type {wire}, expected one of {allowed}")


def _packed_varints(view):
    values, pos = [], 0
    while pos < len(view):
        value, pos = read_varint(view, pos)
        values.append(value)
    return values


def _numbers(view, dtype, what):
    """Little-endian floats/doubles from a packed payload or a single fixed-width value."""
    itemsize = np.dtype(dtype).itemsize
    if len(view) % itemsize:
        raise CaffeModelError(f"{what}: {len(view)} bytes is not a whole number of {itemsize}-byte values")
    return np.frombuffer(view, dtype=dtype)


def parse_blob(buf):
    """Decode one BlobProto into a float32 array of its declared shape.

    The shape comes from ``shape`` when present, else from the legacy
    num/channels/height/width (a 4-D shape), else the data are 1-D. Values come from
    ``data`` (float32), or from ``double_data`` when there are no float values.
    """
    floats, doubles, dims, legacy = [], [], None, {}
    for number, wire, value in iter_fields(buf):
        if number == 5:
            _expect(wire, (LENGTH_DELIMITED, FIXED32), "BlobProto.data")
            floats.append(_numbers(value, "<f4", "BlobProto.data"))
        elif number == 8:
            _expect(wire, (LENGTH_DELIMITED, FIXED64), "BlobProto.double_data")
            doubles.append(_numbers(value, "<f8", "BlobProto.double_data"))
        elif number == 7:
            _expect(wire, (LENGTH_DELIMITED,), "BlobProto.shape")
            dims = [] if dims is None else dims
            for sub_number, sub_wire, sub_value in iter_fields(value):
                if sub_number == 1:
                    _expect(sub_wire, (VARINT, LENGTH_DELIMITED), "BlobShape.dim")
                    dims += [sub_value] if sub_wire == VARINT else _packed_varints(sub_value)
        elif number in (1, 2, 3, 4):  # num, channels, height, width
            _expect(wire, (VARINT,), "BlobProto num/channels/height/width")
            legacy[number] = value
    values = np.concatenate(floats) if floats else np.concatenate(doubles) if doubles else np.zeros(0)
    if dims is not None:
        shape = tuple(dims)
    elif legacy:
        shape = tuple(legacy.get(n, 0) for n in (1, 2, 3, 4))
    else:
        shape = (values.size,)
    if int(np.prod(shape)) != values.size:
        raise CaffeModelError(f"blob declares shape {shape} ({int(np.prod(shape))} values) "
                              f"but holds {values.size} values")
    return values.astype(np.float32).reshape(shape)


def parse_net(buf):
    """Decode a NetParameter: {layer name: [blob arrays]} for the layers that have blobs.

    Reads both the current ``layer`` field (100) and the legacy ``layers`` field (2).
    """
    layers = {}
    for number, wire, value in iter_fields(buf):
        if number not in (100, 2):
            continue
        _expect(wire, (LENGTH_DELIMITED,), "NetParameter.layer(s)")
        name_field, blobs_field = (1, 7) if number == 100 else (4, 6)
        name, blobs = None, []
        for sub_number, sub_wire, sub_value in iter_fields(value):
            if sub_number == name_field:
                _expect(sub_wire, (LENGTH_DELIMITED,), "layer name")
                name = bytes(sub_value).decode("utf-8", errors="replace")
            elif sub_number == blobs_field:
                _expect(sub_wire, (LENGTH_DELIMITED,), "layer blobs")
                try:
                    blobs.append(parse_blob(sub_value))
                except CaffeModelError as e:
                    raise CaffeModelError(f"layer {name!r}, blob {len(blobs)}: {e}") from None
        if blobs:
            layers[name] = blobs
    return layers


def read_caffemodel(path):
    """Read a .caffemodel file: {layer name: [blob arrays]} (weights first, then bias)."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return parse_net(data)
    except CaffeModelError as e:
        raise CaffeModelError(f"{path} is not a readable .caffemodel: {e}") from None
