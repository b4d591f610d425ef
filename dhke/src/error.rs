//! The one error type of `dhke`: why a public value or a shared secret was refused.

/// Why a Diffie-Hellman value was refused. Each variant is a reason a person or a
/// log can act on; none carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The group id is neither 14 nor 15.
    #[error("unknown Diffie-Hellman group {0} (supported: 14, 15)")]
    UnknownGroup(u8),
    /// A public value must be exactly as long as the group's prime.
    #[error("public value is {got} bytes, expected {expected}")]
    PublicLength { expected: usize, got: usize },
    /// A public value must satisfy 1 < y < p-1.
    #[error("public value out of range (must be 1 < y < p-1)")]
    PublicRange,
    /// The peer sent back our own public value.
    #[error("peer public value equals our own (reflected)")]
    Reflected,
    /// The value is not in the prime-order subgroup (a quadratic non-residue).
    #[error("public value is not in the prime-order subgroup")]
    NotInSubgroup,
    /// The CPace generator came out as 0, 1 or p-1 (never seen: ~2^-2040).
    #[error("the room code hashed to a degenerate generator; choose another room code")]
    WeakGenerator,
    /// 32 bytes that are not a usable Ed25519 public key (not a point, or of
    /// small order).
    #[error("not a valid identity key")]
    BadIdentityKey,
    /// An Ed25519 signature that does not verify.
    #[error("the identity signature does not verify")]
    BadSignature,
    /// The shared secret came out as 1 or p-1.
    #[error("shared secret is degenerate (1 or p-1)")]
    WeakSharedSecret,
}
