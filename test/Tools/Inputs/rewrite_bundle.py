#!/usr/bin/env python3
"""Rewrites a kvq kernel bundle as another build of kvq would have made it.

    rewrite_bundle.py IN OUT FIELD=VALUE

sets FIELD (a key-input line such as generator or compiler) of every entry
to VALUE, recomputes each key as the SHA-256 of its key inputs and reseals
the manifest, so the bundle is intact and only its provenance differs: what
`kvq-cache import` must refuse with a message (test/Tools/kvq-cache-bundle.test).
"""
import hashlib
import json
import sys


def main():
    source, target, change = sys.argv[1:4]
    field, value = change.split("=", 1)
    data = open(source, "rb").read()
    magic, header, rest = data.split(b"\n", 2)
    length = int(header.split(b" ")[0])
    manifest = json.loads(rest[:length])
    payload = rest[length:]
    for entry in manifest["entries"]:
        lines = entry["info"]["key_inputs"].splitlines()
        lines = [f"{field}={value}" if l.startswith(field + "=") else l for l in lines]
        text = "\n".join(lines) + "\n"
        entry["info"]["key_inputs"] = text
        entry["key"] = hashlib.sha256(text.encode()).hexdigest()
    body = json.dumps(manifest, separators=(",", ":")).encode()
    seal = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    open(target, "wb").write(magic + b"\n" + seal + b"\n" + body + payload)


if __name__ == "__main__":
    main()
