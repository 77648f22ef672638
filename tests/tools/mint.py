"""Mints keys and tokens for spike's auth tests with PyJWT.

Reads a JSON list of jobs on stdin and writes a JSON list of results, one
per job, on stdout: one process for a batch, since loading `cryptography`
is the slow part.

Jobs:
  {"op": "rsa_key", "kid": K}      -> {"pem": private PEM, "public_pem": ..., "jwk": public JWK}
  {"op": "ec_key", "kid": K}       -> the same for ES256 (P-256)
  {"op": "sign", "alg": A, "key": PEM or secret, "claims": {...}, "headers": {...}}
                                   -> {"token": ...}   (jwt.encode)
  {"op": "hs256_raw", "secret": S, "claims": {...}, "headers": {...}}
                                   -> {"token": ...}   HS256 by hand, with any
                                      secret (PyJWT refuses a PEM public key as
                                      an HMAC secret: that is the confusion attack)
  {"op": "unsigned", "claims": {...}, "headers": {...}}
                                   -> {"token": ...}   alg "none"
"""

import base64
import hashlib
import hmac
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def key_result(private, kid, alg, algorithm):
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    jwk = json.loads(algorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return {"pem": pem, "public_pem": public_pem, "jwk": jwk}


def run(job):
    op = job["op"]
    headers = job.get("headers") or {}
    claims = job.get("claims") or {}
    if op == "rsa_key":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key_result(private, job["kid"], "RS256", RSAAlgorithm)
    if op == "ec_key":
        private = ec.generate_private_key(ec.SECP256R1())
        return key_result(private, job["kid"], "ES256", ECAlgorithm)
    if op == "sign":
        return {"token": jwt.encode(claims, job["key"], algorithm=job["alg"], headers=headers)}
    if op == "hs256_raw":
        signing_input = segment({"alg": "HS256", "typ": "JWT", **headers}) + "." + segment(claims)
        mac = hmac.new(job["secret"].encode(), signing_input.encode(), hashlib.sha256).digest()
        return {"token": signing_input + "." + b64(mac)}
    if op == "unsigned":
        return {"token": segment({"alg": "none", "typ": "JWT", **headers}) + "." + segment(claims) + "."}
    raise ValueError(f"unknown op {op}")


if __name__ == "__main__":
    json.dump([run(job) for job in json.load(sys.stdin)], sys.stdout)
