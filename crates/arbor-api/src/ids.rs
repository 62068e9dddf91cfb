//! Sandbox ids and tokens from the OS's random source.

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS source failing means the host is unusable; fall back to a
    // time-and-counter mix only to stay unique, never to be secret.
    if getrandom::fill(&mut buf).is_err() {
        tracing::error!("the OS random source failed");
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    buf
}

/// A sandbox id: 20 characters of `[a-z0-9]`, like E2B's.
pub fn sandbox_id() -> String {
    random_bytes::<20>().iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

/// A secret token: 32 random bytes in hex.
pub fn token() -> String {
    random_bytes::<32>().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_valid_runtime_ids_and_differ() {
        let a = super::sandbox_id();
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(a, super::sandbox_id());
        assert_eq!(super::token().len(), 64);
    }
}
