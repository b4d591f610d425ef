"""Independent computation of the §13 known-answer vectors (docs/protocol.md) that
dhke/tests/vectors.rs pins, and the §15 identity vectors: Python's hashlib/hmac,
argon2-cffi and cryptography (Ed25519, X25519), no Rust code.

Run: pip install argon2-cffi cryptography && python3 dhke/tests/pake_vectors.py
"""

import base64
import hashlib
import hmac

from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MODP = {
    14: """
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AACAA68 FFFFFFFF FFFFFFFF""",
    15: """
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AAAC42D AD33170D 04507A33 A85521AB DF1CBA64
    ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7
    ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B
    F12FFA06 D98A0864 D8760273 3EC86A64 521F2B18 177B200C
    BBE11757 7A615D6C 770988C0 BAD946E2 08E24FA0 74E5AB31
    43DB5BFC E0FD108E 4B82D120 A93AD2CA FFFFFFFF FFFFFFFF""",
}
P = {g: int("".join(t.split()), 16) for g, t in MODP.items()}
PLEN = {14: 256, 15: 384}


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def hmac256(key, *parts):
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def hkdf(salt, ikm, info, length):
    prk = hmac256(salt, ikm)
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac256(prk, block, info, bytes([i]))
        out += block
        i += 1
    return prk, out[:length]


def lp(b):
    return len(b).to_bytes(4, "big") + b


def argon2id(secret, salt):
    return hash_secret_raw(secret, salt, time_cost=2, memory_cost=19 * 1024,
                           parallelism=1, hash_len=32, type=Type.ID, version=19)


def nameplate_tag(n):
    return sha256(b"p2pchat/v2/nameplate", str(n).encode())


def is_nameplate_code(code):
    parts = code.split("-")
    n = parts[0]
    return (len(parts) == 5 and 1 <= len(n) <= 6 and n.isdigit() and n.isascii()
            and n[0] != "0" and all(w and w.isascii() and w.isalpha() and w.islower()
                                    for w in parts[1:]))


def tag_of(code):
    if is_nameplate_code(code):
        return nameplate_tag(int(code.split("-")[0]))
    return argon2id(code.encode(), b"p2pchat/v2/room-tag")


def generator(code, group):
    p = P[group]
    ikm = lp(code.encode()) + lp(tag_of(code)) + bytes([group])
    _, okm = hkdf(b"p2pchat/v2/cpace-generator", ikm, b"", PLEN[group] + 16)
    h = int.from_bytes(okm, "big") % p
    g = h * h % p
    assert g not in (0, 1, p - 1)
    return g


def be(x, group):
    return x.to_bytes(PLEN[group], "big")


def private(fill):
    b = bytearray([fill] * 40)
    b[0] |= 0x80
    return int.from_bytes(bytes(b), "big")


def main():
    print("nameplate_tag(7)   ", nameplate_tag(7).hex())
    print("nameplate_tag(482) ", nameplate_tag(482).hex())
    print("typed tag 7-velvet-harbor", tag_of("7-velvet-harbor").hex())
    print("lan_key 7-velvet-harbor-maple-otter",
          argon2id(b"7-velvet-harbor-maple-otter", b"p2pchat/v2/lan-key").hex())
    print("lan_key 7-velvet-harbor",
          argon2id(b"7-velvet-harbor", b"p2pchat/v2/lan-key").hex())
    for code in ["7-velvet-harbor-maple-otter", "7-velvet-harbor"]:
        for group in (14, 15):
            g = be(generator(code, group), group)
            print(f"G {code} group{group} head {g[:8].hex()} sha256 {sha256(g).hex()}")

    # A whole session, group 14, fixed exponents and nonces.
    code, group = "7-velvet-harbor-maple-otter", 14
    p, g = P[group], generator(code, group)
    xh, xj = private(0x11), private(0x22)
    yh, yj = be(pow(g, xh, p), group), be(pow(g, xj, p), group)
    z = be(pow(int.from_bytes(yj, "big"), xh, p), group)
    assert z == be(pow(int.from_bytes(yh, "big"), xj, p), group)
    tag = tag_of(code)
    th = sha256(b"p2pchat/v1/transcript", lp(tag), bytes([group]), lp(b"alice"), lp(yh),
                lp(b"bob"), lp(yj))
    salt = sha256(th, code.encode())
    keys = {}
    for label in ["host->joiner enc", "host->joiner mac", "joiner->host enc",
                  "joiner->host mac", "confirm host", "confirm joiner", "sas", "resume"]:
        prk = hmac256(salt, z)
        keys[label] = hmac256(prk, b"p2pchat/v1/" + label.encode(), b"\x01")
    nh, nj = bytes([0xA0] * 32), bytes([0xB0] * 32)
    commit = sha256(b"p2pchat/v1/commit", nj)
    # Identities (§15): Ed25519 seeds 32 x 01 (host) and 32 x 02 (joiner).
    sk_h = Ed25519PrivateKey.from_private_bytes(bytes([1] * 32))
    sk_j = Ed25519PrivateKey.from_private_bytes(bytes([2] * 32))
    id_h, id_j = raw_public(sk_h), raw_public(sk_j)
    thi = sha256(b"p2pchat/v2/identities", th, id_h, id_j)
    mac_h = hmac256(keys["confirm host"], thi, commit, nh, b"\x00")
    mac_j = hmac256(keys["confirm joiner"], thi, commit, nh, b"\x00", nj)
    sig_h = sk_h.sign(b"p2pchat/v2/sign host" + thi + commit + nh + b"\x00")
    sig_j = sk_j.sign(b"p2pchat/v2/sign joiner" + thi + commit + nh + b"\x00" + nj)
    sas = int.from_bytes(hmac256(keys["sas"], thi, nh, nj)[:4], "big") % 10**6
    print("session Y_host sha256", sha256(yh).hex())
    print("session Y_joiner sha256", sha256(yj).hex())
    print("session Z sha256", sha256(z).hex())
    print("session th", th.hex())
    for label in ["host->joiner enc", "host->joiner mac", "joiner->host enc", "joiner->host mac"]:
        print(f"session k({label})", keys[label].hex())
    print("session id_host", id_h.hex())
    print("session id_joiner", id_j.hex())
    print("session thi", thi.hex())
    print("session sigH", sig_h.hex())
    print("session sigJ", sig_j.hex())
    print("session macH", mac_h.hex())
    print("session macJ", mac_j.hex())
    print(f"session SAS {sas // 1000:03} {sas % 1000:03}")

    # Fingerprint, contact secret (X25519 of the Ed25519 keys), its room tag and
    # the token checksum.
    fp = sha256(b"p2pchat/v2/fingerprint", id_h)[:16].hex()
    print("fingerprint", " ".join(fp[i:i + 4] for i in range(0, 32, 4)))
    shared = x25519_of(bytes([1] * 32)).exchange(X25519PublicKey.from_public_bytes(montgomery_u(id_j)))
    assert shared == x25519_of(bytes([2] * 32)).exchange(X25519PublicKey.from_public_bytes(montgomery_u(id_h)))
    lo, hi = sorted([id_h, id_j])
    _, contact = hkdf(b"p2pchat/v2/contact", shared, lo + hi, 32)
    print("contact secret", contact.hex())
    print("contact room tag", sha256(b"p2pchat/v2/secret-room", contact).hex())
    print("token checksum of 'p2pchat'", sha256(b"p2pchat/v2/token-check", b"p2pchat")[:4].hex())

    # A connection token (§16): identity A, secret 16 x 22, expiry 1800000000,
    # one address 192.0.2.7:4000.
    body = (id_h + bytes([0x22] * 16) + (1800000000).to_bytes(8, "big") + bytes([1, 4, 192, 0, 2, 7])
            + (4000).to_bytes(2, "big"))
    check = sha256(b"p2pchat/v2/token-check", body)[:4]
    print("token v2 (refused as older)", "p2pchat:1:" + base64.b32encode(body + check).decode().lower().rstrip("="))
    # The protocol v3 token (§16.1): the same, then m and the mediator.
    for mediator in [b"", b"203.0.113.1:7070"]:
        body3 = body + bytes([len(mediator)]) + mediator
        check3 = sha256(b"p2pchat/v2/token-check", body3)[:4]
        print("token", mediator.decode() or "(no mediator)",
              "p2pchat:2:" + base64.b32encode(body3 + check3).decode().lower().rstrip("="))
    room = sha256(b"p2pchat/v2/token-room", bytes([0x22] * 16))
    print("token room secret", room.hex())
    print("token room tag", sha256(b"p2pchat/v2/secret-room", room).hex())


def raw_public(sk):
    return sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_of(seed):
    """The X25519 key of an Ed25519 seed: the first half of SHA-512(seed) (X25519 clamps)."""
    return X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])


def montgomery_u(ed_public):
    """The Montgomery u of an Edwards point: u = (1 + y) / (1 - y) mod 2^255 - 19."""
    q = 2**255 - 19
    y = int.from_bytes(ed_public, "little") & ((1 << 255) - 1)
    return ((1 + y) * pow(1 - y, q - 2, q) % q).to_bytes(32, "little")


if __name__ == "__main__":
    main()
