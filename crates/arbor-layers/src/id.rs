//! Layer identifiers: `sha256-<hex>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

const PREFIX: &str = "sha256-";

/// The name of a layer: the SHA-256 digest of its content (see [`crate::digest`]).
///
/// Written as `sha256-<64 lowercase hex digits>`, which is also its directory name in the store;
/// the `-` (not `:`) keeps it usable in overlayfs mount options, where `:` separates lower dirs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId([u8; 32]);

impl LayerId {
    /// Wraps a raw SHA-256 digest.
    pub fn from_digest(bytes: [u8; 32]) -> Self {
        LayerId(bytes)
    }

    /// The raw digest.
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits, without the `sha256-` prefix.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerId({self})")
    }
}

impl FromStr for LayerId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidId(s.to_owned());
        let hex = s.strip_prefix(PREFIX).ok_or_else(bad)?;
        // Lowercase only, so that every layer has exactly one spelling (and one directory).
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(LayerId(out))
    }
}

impl Serialize for LayerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LayerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_spellings() {
        let text = format!("sha256-{}", "0123456789abcdef".repeat(4));
        let id: LayerId = text.parse().unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        for bad in [
            "0123".to_owned(),
            format!("sha256:{}", "0".repeat(64)),
            format!("sha256-{}", "A".repeat(64)),
            format!("sha256-{}", "0".repeat(63)),
            format!("sha256-{}", "g".repeat(64)),
        ] {
            assert!(matches!(bad.parse::<LayerId>(), Err(Error::InvalidId(_))), "{bad}");
        }
    }
}
