#!/usr/bin/env python3
"""Send HL7 v2 message files to an MLLP listener with python-hl7's client and print the ACKs.

    pip install hl7==0.4.5
    tools/hl7v2/send.py HOST PORT FILE...

Each file holds one message (CR, LF or CRLF between segments; a UTF-8 BOM is dropped) and is
sent as it is over one connection, in order. One JSON object per message is printed on
stdout: the file, MSA-1 (AA/AE/AR), MSA-2 (the control id acknowledged) and the ERR segments
(ERR-2 location, ERR-3 code, ERR-8 text). The exit status is 0 when every message got an
acknowledgement, whatever its code.

The crates/server/tests/hl7.rs tests use this script to check the feed with a client phip did
not write; it is also a quick way to try a listener (`phip serve --mllp 127.0.0.1:2575`).
"""

import json
import sys

import hl7
from hl7.client import MLLPClient


def er7(raw):
    """The message as bytes with CR between segments, the way MLLP peers send it."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"\r".join(line for line in lines if line.strip()) + b"\r"


def read_ack(reply):
    """MSA-1, MSA-2 and the ERR segments of an ACK, parsed by python-hl7."""
    text = reply.decode("utf-8", errors="replace").strip("\x0b\x1c\r\n")
    message = hl7.parse(text)
    msa = message.segment("MSA")
    errors = []
    err_segments = [segment for segment in message if str(segment[0]) == "ERR"]
    for number, segment in enumerate(err_segments, start=1):

        def field(n, segment=segment):
            return str(segment[n]) if len(segment) > n else ""

        # ERR-3 is a CWE: its first component is the table 0357 code.
        code = message.extract_field("ERR", number, 3, 1, 1) if field(3) else ""
        errors.append({"location": field(2), "code": code, "text": field(8)})
    return str(msa[1]), str(msa[2]), errors


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    host, port, files = argv[1], int(argv[2]), argv[3:]
    with MLLPClient(host, port) as client:
        for path in files:
            with open(path, "rb") as f:
                reply = client.send_message(er7(f.read()))
            # python-hl7 reads one recv() worth: finish the frame if the ACK came in pieces.
            while b"\x1c\r" not in reply:
                more = client.socket.recv(65536)
                if not more:
                    break
                reply += more
            code, control_id, errors = read_ack(reply)
            print(json.dumps({"file": path, "code": code, "control_id": control_id,
                              "errors": errors}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
