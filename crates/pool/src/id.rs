//! Stable example ids: a hash of an example's content and origin.

use sha2::{Digest, Sha256};

/// The first 16 bytes (32 hex digits) of SHA-256 over `parts` separated by the unit separator.
/// The same content from the same origin always gets the same id; the same text sampled twice
/// (different call seed or sample index) gets two.
pub fn example_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0x1f]);
        }
        h.update(p.as_bytes());
    }
    hex(&h.finalize()[..16])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's bytes, hex.
pub(crate) fn file_sha256(path: &std::path::Path) -> crate::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| crate::Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}
