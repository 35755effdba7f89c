"""The Express client and this one build the same request documents and store
responses the same way, so the two can serve one API from one ledger.

Runs clients/node's lib/fingerprint.js and lib/response.js with node (they
need no node packages); skipped where node is not installed.
"""

import base64
import json
import os
import shutil
import subprocess
from decimal import Decimal

import pytest

from idempotency_asgi.fingerprint import BodyNotJson, request_document
from idempotency_asgi.response import decode_response, encode_response

NODE_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "node", "lib")

SCRIPT = r"""
const { requestDocument } = require(process.argv[1] + '/fingerprint.js');
const { encodeResponse } = require(process.argv[1] + '/response.js');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const docs = input.requests.map(([m, t, ct, b]) => requestDocument(m, t, ct, Buffer.from(b, 'base64')));
const responses = input.responses.map(([headers, b]) =>
  encodeResponse(Object.fromEntries(headers), Buffer.from(b, 'base64'), new Set(['content-type', 'location'])));
process.stdout.write(JSON.stringify({ docs: docs.map((d) => d.text || null), responses }));
"""

REQUESTS = [
    ("POST", "/payments", "application/json", b'{"amount": 42, "currency": "eur"}'),
    ("POST", "/payments?x=1&y=%C3%A9", "application/json; charset=utf-8", b'{ "b" : [1.0, 2e3, -0], "a": null }'),
    ("PATCH", "/orders/7", "application/merge-patch+json", '{"name": "Zo\u00eb \U0001F600"}'.encode("utf-8")),
    ("POST", "/big", "application/json", b'{"n": 123456789012345678901234567890.123456789}'),
    ("POST", "/nul", "application/json", b'{"s": "a\\u0000b"}'),
    ("POST", "/surrogate", "application/json", b'["\\ud800"]'),
    ("POST", "/deep", "application/json", b"[" * 600 + b"]" * 600),
    ("POST", "/deeper", "application/json", b"[" * 2000 + b"]" * 2000),
    ("POST", "/upload", "application/octet-stream", bytes(range(256))),
    ("POST", "/form", "application/x-www-form-urlencoded", b"a=1&b=2"),
    ("POST", "/empty", "application/json", b""),
    ("POST", "/none", None, b""),
    ("POST", "/bad", "application/json", b'{"a": '),
    ("POST", "/nan", "application/json", b"[NaN]"),
    ("POST", "/bom", "application/json", b'\xef\xbb\xbf{"a": 1}'),
    ("POST", "/latin1", "application/json", b'{"a": "\xe9"}'),
]

RESPONSES = [
    ([("content-type", "application/json; charset=utf-8"), ("location", "/p/1"), ("x-other", "1")],
     b'{"payment_id":1}'),
    ([("content-type", "application/octet-stream")], bytes([0, 1, 2, 255])),
    ([("content-type", "text/plain")], "caf\u00e9".encode("utf-8")),
    ([], b""),
]


def _python_doc(method, target, content_type, body):
    try:
        return request_document(method, target, content_type, body)
    except BodyNotJson:
        return None


def _load(text):
    return None if text is None else json.loads(text, parse_float=Decimal, parse_int=Decimal)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_and_python_build_the_same_documents():
    payload = {
        "requests": [[m, t, ct, base64.b64encode(b).decode()] for m, t, ct, b in REQUESTS],
        "responses": [[h, base64.b64encode(b).decode()] for h, b in RESPONSES],
    }
    out = subprocess.run(["node", "-e", SCRIPT, NODE_LIB], input=json.dumps(payload).encode(),
                         capture_output=True, check=True, timeout=60)
    node = json.loads(out.stdout)

    for (method, target, ct, body), node_doc in zip(REQUESTS, node["docs"]):
        py_doc = _python_doc(method, target, ct, body)
        assert _load(py_doc) == _load(node_doc), target

    for (headers, body), node_text in zip(RESPONSES, node["responses"]):
        raw = [(n.encode(), v.encode()) for n, v in headers]
        py_text = encode_response(raw, body, frozenset({"content-type", "location"}))
        assert json.loads(py_text) == json.loads(node_text)
        replay_headers, replay_body = decode_response(json.loads(node_text))
        assert replay_body == body
        assert [n for n, _ in replay_headers] == [n.encode() for n, _ in headers
                                                  if n in ("content-type", "location")]
