"""A hand-written walk over JPEG bytes, independent of the package's parser (ITU T.81 B.1), shared by the
data tests: the header segments through SOS and the markers of the scan."""


def segments(data):
    """[(marker byte, position of its 0xFF, length)] of the header segments through SOS (T.81 B.1.1)."""
    out, i = [], 2
    while True:
        assert data[i] == 0xFF
        while data[i + 1] == 0xFF:                 # fill bytes (T.81 B.1.1.2)
            i += 1
        m = data[i + 1]
        n = data[i + 2] * 256 + data[i + 3]
        out.append((m, i, n))
        if m == 0xDA:
            return out
        i += 2 + n


def sos_end(data):
    """Position of the first entropy-coded byte (just after the SOS segment)."""
    _, i, n = segments(data)[-1]
    return i + 2 + n


def scan_markers(data):
    """Every RSTn of the scan, then the marker ending it: walk the bytes (0xFF 0x00 is a stuffed 0xFF)."""
    j, found = sos_end(data), []
    while True:
        if data[j] == 0xFF and data[j + 1] != 0x00:
            found.append(j)
            if not 0xD0 <= data[j + 1] <= 0xD7:
                return found
            j += 2
        else:
            j += 1
