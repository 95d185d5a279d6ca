"""Byte-level mutations of serialized requests, and garbage, for the fuzzer's raw calls.

These never go through the generated stubs: the bytes are sent as they are (identity
serializers), so the server sees malformed varints, lying lengths, invalid wire types, fields
repeated or nested past the parser's recursion limit, exactly as a hostile client would send them.
"""


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data, pos):
    result, shift = 0, 0
    while pos < len(data) and shift < 70:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos
    raise ValueError("bad varint")


def fields(data):
    """Top-level fields of a well-formed message as (start, end, number, wire_type, payload
    start); raises ValueError on anything it cannot walk."""
    out = []
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        payload = pos
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            payload = pos
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError("group or invalid wire type")
        if pos > len(data):
            raise ValueError("truncated")
        out.append((start, pos, number, wire, payload))
    return out


def duplicate_field(rng, data, depth=0):
    """Repeats one field (a scalar: last one wins; a message: the copies merge), possibly inside
    a nested message, re-encoding the enclosing lengths."""
    try:
        found = fields(data)
    except ValueError:
        return data + data[: rng.randint(0, len(data))]
    if not found:
        return data
    start, end, number, wire, payload = rng.choice(found)
    if wire == 2 and depth < 4 and rng.random() < 0.5:
        inner = duplicate_field(rng, data[payload:end], depth + 1)
        field = varint((number << 3) | 2) + varint(len(inner)) + inner
        return data[:start] + field + data[end:]
    copies = data[start:end] * rng.choice([1, 1, 2, 50])
    where = rng.choice([start, end, len(data)])
    return data[:where] + copies + data[where:]


def flip_bits(rng, data):
    if not data:
        return bytes([rng.getrandbits(8)])
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 16])):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(rng, data):
    if len(data) <= 1:
        return b""
    return data[: rng.randrange(1, len(data))]


def insert_random_field(rng, data):
    """An unknown or known field number with a payload of the wrong (or an invalid) wire type."""
    number = rng.choice([1, 2, 3, 4, 5, 6, 7, 15, 16, 2047, 2**29 - 1, rng.randint(1, 2**29 - 1)])
    wire = rng.choice([0, 1, 2, 3, 4, 5, 6, 7])
    key = varint((number << 3) | wire)
    if wire == 0:
        body = varint(rng.getrandbits(64))
    elif wire == 1:
        body = rng.randbytes(8)
    elif wire == 2:
        blob = rng.randbytes(rng.randint(0, 64))
        body = varint(len(blob) + rng.choice([0, 0, 0, 1, 1000, 2**31])) + blob
    elif wire == 5:
        body = rng.randbytes(4)
    else:
        body = rng.randbytes(rng.randint(0, 8))
    where = rng.choice([0, len(data), rng.randint(0, len(data))])
    return data[:where] + key + body + data[where:]


def overlong_varint(rng, data):
    """A varint of 11 or more bytes (protobuf allows 10) or one that never ends."""
    body = b"\xff" * rng.randint(10, 20) + (b"\x01" if rng.random() < 0.5 else b"")
    return data + varint((rng.choice([1, 2, 3]) << 3) | 0) + body


def deep_nesting(rng, data):
    """Groups or messages nested beyond the parser's recursion limit (100)."""
    depth = rng.choice([101, 200, 5000])
    if rng.random() < 0.5:
        number = rng.randint(20, 30)
        return data + varint((number << 3) | 3) * depth + varint((number << 3) | 4) * depth
    # Nested length-delimited unknown fields: each wraps the previous one.
    inner = b""
    for _ in range(depth):
        inner = varint((99 << 3) | 2) + varint(len(inner)) + inner
    return data + inner


def packed_garbage(rng, data):
    """A packed repeated field whose body is not a whole number of elements."""
    body = rng.randbytes(rng.choice([1, 3, 7, 9, 1001]))
    number = rng.choice([1, 2, 3, 9])
    return data + varint((number << 3) | 2) + varint(len(body)) + body


MUTATIONS = [flip_bits, truncate, duplicate_field, insert_random_field, overlong_varint,
             deep_nesting, packed_garbage]


def mutate(rng, data):
    """One to three mutations of serialized bytes; returns (bytes, names)."""
    names = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.choice(MUTATIONS)
        data = op(rng, data)
        names.append(op.__name__)
    return data, names


def garbage(rng):
    """Bytes with no structure: random, repeated, or all-0xFF/0x00 runs."""
    n = rng.choice([0, 1, 2, 5, 17, 100, 1000, 4096])
    kind = rng.choice(["random", "random", "ff", "zero", "pattern"])
    if kind == "random":
        return rng.randbytes(n)
    if kind == "ff":
        return b"\xff" * n
    if kind == "zero":
        return b"\x00" * n
    return (rng.randbytes(rng.randint(1, 8)) * n)[:n]


def padded_to(message_bytes, size):
    """The message plus one unknown length-delimited field (number 1000) making it exactly
    `size` bytes, or None when it is already longer."""
    key = varint((1000 << 3) | 2)
    for length_bytes in range(1, 6):
        pad = size - len(message_bytes) - len(key) - length_bytes
        if pad >= 0 and len(varint(pad)) == length_bytes:
            return message_bytes + key + varint(pad) + b"\xa5" * pad
    return None
