//! Nix's base-32 encoding ("nix32"), used for store path hashes and the
//! `sha256:` hashes in narinfo files.
//!
//! It is not RFC 4648 base32: the alphabet omits `e`, `o`, `u` and `t`, and
//! the hash is read as one little-endian bit string, emitted from its most
//! significant end.

use thiserror::Error;

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("invalid character {0:?} in nix32 string")]
    InvalidChar(char),
    #[error("nix32 string has length {0}, which no byte string encodes to")]
    InvalidLength(usize),
    #[error("nix32 string sets bits beyond its byte length")]
    NonZeroPadding,
}

/// Length of the nix32 encoding of `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

pub fn encode(bytes: &[u8]) -> String {
    let n = encoded_len(bytes.len());
    let mut out = String::with_capacity(n);
    for i in 0..n {
        let b = (n - 1 - i) * 5;
        let (byte, bit) = (b / 8, b % 8);
        let lo = u16::from(bytes[byte]) >> bit;
        let hi = bytes
            .get(byte + 1)
            .map_or(0, |&next| u16::from(next) << (8 - bit));
        out.push(ALPHABET[usize::from((lo | hi) & 31)] as char);
    }
    out
}

pub fn decode(s: &str) -> Result<Vec<u8>, DecodeError> {
    let len = s.len() * 5 / 8;
    if encoded_len(len) != s.len() {
        return Err(DecodeError::InvalidLength(s.len()));
    }
    let mut out = vec![0u8; len];
    for (i, c) in s.chars().rev().enumerate() {
        let digit = ALPHABET
            .iter()
            .position(|&a| a as char == c)
            .ok_or(DecodeError::InvalidChar(c))? as u16;
        let b = i * 5;
        let (byte, bit) = (b / 8, b % 8);
        let shifted = digit << bit;
        out[byte] |= shifted as u8;
        let carry = (shifted >> 8) as u8;
        match out.get_mut(byte + 1) {
            Some(next) => *next |= carry,
            None if carry != 0 => return Err(DecodeError::NonZeroPadding),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    // Vectors checked with `nix-hash --type sha256 --to-base32`.
    const VECTORS: &[(&[u8], &str)] = &[
        (b"", "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"),
        (
            b"abc",
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
        ),
        (
            b"hello",
            "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic",
        ),
    ];

    #[test]
    fn sha256_vectors_round_trip() {
        for (input, expected) in VECTORS {
            let digest = Sha256::digest(input);
            assert_eq!(encode(&digest), *expected);
            assert_eq!(decode(expected).unwrap(), digest.as_slice());
        }
    }

    #[test]
    fn store_path_hash_length() {
        // Store path hashes are 20 bytes, 32 characters.
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encode(&[0u8; 20]), "0".repeat(32));
        assert_eq!(encode(&[0xff; 20]), "z".repeat(32));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode("e").unwrap_err(), DecodeError::InvalidLength(1));
        let mut bad = VECTORS[0].1.to_string();
        bad.replace_range(3..4, "e");
        assert_eq!(decode(&bad).unwrap_err(), DecodeError::InvalidChar('e'));
        // 52 chars carry 260 bits; the top 4 must be zero for 32 bytes.
        let overflow = format!("z{}", &VECTORS[0].1[1..]);
        assert_eq!(decode(&overflow).unwrap_err(), DecodeError::NonZeroPadding);
    }

    #[test]
    fn round_trips_every_length() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }
    }
}
