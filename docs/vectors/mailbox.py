#!/usr/bin/env python3
"""The mailbox vectors of docs/protocol.md §22.6, computed apart from the Rust code
with Python's `cryptography` (pip install cryptography). Run: python3 docs/vectors/mailbox.py"""
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
import hashlib
def pub(seed): return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
conv = bytes([7])*32
member = pub(bytes([2])*32)
q = HKDF(hashes.SHA256(), 32, b"p2pchat/v3/mailbox", b"queue"+member).derive(conv)
part = lambda info: HKDFExpand(hashes.SHA256(), 32, info).derive(q)
qid, add_seed, seal_key, mac_key = part(b"id"), part(b"add"), part(b"seal"), part(b"mac")
print("member", member.hex()); print("id", qid.hex()); print("add_pub", pub(add_seed).hex())
h0 = hmac.HMAC(mac_key, hashes.SHA256()); h0.update(b"p2pchat/v3/mailbox-iv"+b"hello mailbox"); iv = h0.finalize()[:16]
p = padding.PKCS7(128).padder(); pt = p.update(b"hello mailbox") + p.finalize()
e = Cipher(algorithms.AES(seal_key), modes.CBC(iv)).encryptor(); ct = e.update(pt)+e.finalize()
h = hmac.HMAC(mac_key, hashes.SHA256()); h.update(b"p2pchat/v3/mailbox-item"+qid+iv+ct); tag = h.finalize()
sealed = iv+ct+tag
print("sealed", sealed.hex()); print("item_id", hashlib.sha256(sealed).digest()[:16].hex())
read_seed = HKDF(hashes.SHA256(), 32, b"p2pchat/v3/mailbox-read", qid).derive(bytes([1])*32)
print("read_pub", pub(read_seed).hex())
at = 1800000000
msg = b"p2pchat/v3/mailbox-add"+qid+at.to_bytes(8,'big')+hashlib.sha256(sealed).digest()
print("add_sig", Ed25519PrivateKey.from_private_bytes(add_seed).sign(msg).hex())
