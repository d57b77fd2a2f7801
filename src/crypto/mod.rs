//! The AirPort Express key and the two cryptographic jobs a RAOP receiver has:
//! proving it is an "AirPort" (Apple-Challenge → Apple-Response) and decrypting the
//! audio (RSA-OAEP-wrapped AES-128 key, AES-128-CBC per packet).
//!
//! Challenges, keys and payloads come off the network: no panic on input (issue 11).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable
    )
)]

use aes::cipher::{BlockDecrypt, KeyInit};
use base64::Engine;
use rsa::{BigUint, Oaep, Pkcs1v15Sign, RsaPrivateKey};
use std::net::IpAddr;

mod airport_key;

/// The AirPort key's public exponent.
const AIRPORT_KEY_E: u32 = 65537;

/// Base64 as senders write it: often without `=` padding, sometimes with.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decodes base64 with or without padding (and ignoring surrounding whitespace).
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim()).ok()
}

/// Encodes base64 without `=` padding, as Apple-Response wants it.
pub fn b64_encode(data: &[u8]) -> String {
    B64.encode(data)
}

/// The private key every open RAOP receiver ships (the AirPort Express's, public knowledge):
/// senders encrypt the session key to its public half and check Apple-Response signatures
/// against it. Built once at start-up (its CRT values cost milliseconds on MIPS).
pub struct AirportKey(RsaPrivateKey);

impl AirportKey {
    /// Builds the built-in key from its numbers ([`airport_key`]), once at start-up before
    /// any input is read.
    // The one `expect` in the network-facing modules: the key is a compile-time constant
    // (checked by `key_is_the_pem_key_and_2048_bits`), so failing is a build defect, not input.
    #[allow(clippy::expect_used)]
    pub fn load() -> Self {
        let n = |b: &[u8]| BigUint::from_bytes_be(b);
        let key = RsaPrivateKey::from_components(
            n(&airport_key::N),
            BigUint::from(AIRPORT_KEY_E),
            n(&airport_key::D),
            vec![n(&airport_key::P), n(&airport_key::Q)],
        );
        AirportKey(key.expect("built-in AirPort key"))
    }

    /// Answers an `Apple-Challenge` header: signs challenge ‖ our IP on this connection ‖
    /// MAC (zero-padded to 32 bytes) with PKCS#1 v1.5 type 1 padding and no DigestInfo.
    pub fn apple_response(
        &self,
        challenge_b64: &str,
        local_ip: IpAddr,
        mac: [u8; 6],
    ) -> Option<String> {
        let challenge = b64_decode(challenge_b64)?;
        if challenge.len() > 64 {
            return None;
        }
        let mut msg = Vec::with_capacity(96);
        msg.extend_from_slice(&challenge);
        match local_ip {
            IpAddr::V4(v4) => msg.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // A v4-mapped address is an IPv4 connection on a dual-stack socket.
                Some(v4) => msg.extend_from_slice(&v4.octets()),
                None => msg.extend_from_slice(&v6.octets()),
            },
        }
        msg.extend_from_slice(&mac);
        if msg.len() < 32 {
            msg.resize(32, 0);
        }
        let sig = self.0.sign(Pkcs1v15Sign::new_unprefixed(), &msg).ok()?;
        Some(b64_encode(&sig))
    }

    /// Unwraps the session key from SDP `a=rsaaeskey` (RSA-OAEP with SHA-1).
    pub fn decrypt_aes_key(&self, rsaaeskey_b64: &str) -> Result<[u8; 16], &'static str> {
        let wrapped = b64_decode(rsaaeskey_b64).ok_or("rsaaeskey is not base64")?;
        let key = self
            .0
            .decrypt(Oaep::new::<sha1::Sha1>(), &wrapped)
            .map_err(|_| "rsaaeskey does not decrypt with the AirPort key")?;
        key.try_into()
            .map_err(|_| "rsaaeskey is not a 16-byte AES key")
    }
}

/// Per-stream audio decryption: AES-128-CBC over the block-aligned prefix of each
/// payload, IV reset for every packet, the tail (len % 16 bytes) left in clear.
///
/// The CBC chaining (each plaintext block is the block decrypted by `aes` XOR the ciphertext
/// block before it, the IV for the first) is done here rather than by the `cbc` crate: its
/// decryptor is generic code compiled into raopd at the release profile's `opt-level = "z"`,
/// where it copies each group of blocks it decrypts in parallel element by element, which
/// cost as much as the AES itself (README "Benchmarks"). Blocks are decrypted by the `aes`
/// crate eight at a time ([`CBC_GROUP`]), which its AES-NI backend runs in parallel.
#[derive(Clone)]
pub struct AudioCipher {
    cipher: aes::Aes128,
    iv: [u8; 16],
}

/// Blocks decrypted in one call to the `aes` crate: its AES-NI backend's parallel width.
const CBC_GROUP: usize = 8;

impl AudioCipher {
    pub fn new(key: [u8; 16], iv: [u8; 16]) -> Self {
        AudioCipher {
            cipher: aes::Aes128::new(&key.into()),
            iv,
        }
    }

    /// Decrypts in place; no allocation.
    pub fn decrypt(&self, payload: &mut [u8]) {
        let mut prev = u128::from_ne_bytes(self.iv);
        // Whole blocks only: `chunks_exact_mut` leaves the `len % 16` tail alone.
        for group in payload.chunks_mut(CBC_GROUP * 16) {
            let mut cipher_text = [0u128; CBC_GROUP];
            let mut blocks = [aes::Block::default(); CBC_GROUP];
            let mut n = 0;
            for ((block, saved), bytes) in blocks
                .iter_mut()
                .zip(cipher_text.iter_mut())
                .zip(group.chunks_exact(16))
            {
                block.copy_from_slice(bytes);
                *saved = u128::from_ne_bytes((*block).into());
                n += 1;
            }
            let Some(blocks) = blocks.get_mut(..n) else {
                return;
            };
            self.cipher.decrypt_blocks(blocks);
            for ((block, saved), bytes) in blocks
                .iter()
                .zip(cipher_text.iter())
                .zip(group.chunks_exact_mut(16))
            {
                let plain = u128::from_ne_bytes((*block).into()) ^ prev;
                bytes.copy_from_slice(&plain.to_ne_bytes());
                prev = *saved;
            }
        }
    }
}

/// Lower-case hex MD5, the unit of RTSP Digest authentication.
pub fn md5_hex(parts: &[&[u8]]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Fresh random bytes (nonces, session ids).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand_core::RngCore;
    let mut b = [0u8; N];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PublicKeyParts;
    use rsa::RsaPublicKey;

    /// The numbers raopd builds its key from are those of `airport_key.pem`, the key as the
    /// other open receivers ship it.
    #[test]
    fn key_is_the_pem_key_and_2048_bits() {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let k = AirportKey::load();
        assert_eq!(k.0.size(), 256);
        let pem = RsaPrivateKey::from_pkcs1_pem(include_str!("airport_key.pem")).unwrap();
        assert_eq!(k.0, pem);
        assert!(k.0.validate().is_ok());
    }

    #[test]
    fn apple_response_verifies_with_public_key() {
        let k = AirportKey::load();
        let challenge = [7u8; 16];
        let ip = IpAddr::from([192, 168, 1, 5]);
        let mac = [1, 2, 3, 4, 5, 6];
        let resp = k.apple_response(&b64_encode(&challenge), ip, mac).unwrap();
        assert!(!resp.contains('='));
        let sig = b64_decode(&resp).unwrap();
        let mut expect = challenge.to_vec();
        expect.extend_from_slice(&[192, 168, 1, 5, 1, 2, 3, 4, 5, 6]);
        expect.resize(32, 0);
        let public = RsaPublicKey::from(&k.0);
        public
            .verify(Pkcs1v15Sign::new_unprefixed(), &expect, &sig)
            .unwrap();
    }

    #[test]
    fn rsa_oaep_roundtrip() {
        let k = AirportKey::load();
        let public = RsaPublicKey::from(&k.0);
        let aes_key = *b"0123456789abcdef";
        let wrapped = public
            .encrypt(&mut rand_core::OsRng, Oaep::new::<sha1::Sha1>(), &aes_key)
            .unwrap();
        assert_eq!(k.decrypt_aes_key(&b64_encode(&wrapped)).unwrap(), aes_key);
        assert!(k.decrypt_aes_key("!!!").is_err());
        assert!(k.decrypt_aes_key(&b64_encode(&[1, 2, 3])).is_err());
    }

    #[test]
    fn cbc_prefix_decrypted_tail_clear() {
        // Against the `cbc` crate, over every length up to 20 blocks (so across the groups of
        // CBC_GROUP blocks) and a full 352-frame packet with a tail.
        use aes::cipher::{BlockEncryptMut, KeyIvInit};
        let key = [3u8; 16];
        let iv = [9u8; 16];
        let c = AudioCipher::new(key, iv);
        for len in (0..=20 * 16 + 15).chain([1408, 1411]) {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let mut buf = plain.clone();
            let blocks = len / 16 * 16;
            let mut enc = cbc::Encryptor::<aes::Aes128>::new(&key.into(), &iv.into());
            for block in buf[..blocks].chunks_exact_mut(16) {
                enc.encrypt_block_mut(block.into());
            }
            if blocks > 0 {
                assert_ne!(buf[..blocks], plain[..blocks]);
            }
            // The IV is reset for every packet: decrypting a second copy gives the same.
            let mut again = buf.clone();
            c.decrypt(&mut buf);
            assert_eq!(buf, plain, "{len} bytes");
            c.decrypt(&mut again);
            assert_eq!(again, plain, "{len} bytes, again");
        }
    }

    #[test]
    fn md5_digest_known_value() {
        assert_eq!(md5_hex(&[b"abc"]), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(md5_hex(&[b"a", b"bc"]), "900150983cd24fb0d6963f7d28e17f72");
    }
}
