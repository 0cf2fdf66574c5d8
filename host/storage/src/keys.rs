//! Composite keys that sort and scan correctly.
//!
//! Each component is written as its bytes followed by a 0x00 terminator,
//! with 0x00 and 0x01 inside a component escaped as 0x01 0x01 / 0x01 0x02.
//! That keeps keys ordered component by component and makes "every key of
//! this login" a plain prefix scan, whatever bytes the ids contain.

/// A key under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyBuf(Vec<u8>);

impl KeyBuf {
    /// An empty key.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Appends a terminated, escaped component.
    pub fn push(mut self, component: impl AsRef<[u8]>) -> Self {
        for &byte in component.as_ref() {
            match byte {
                0x00 => self.0.extend_from_slice(&[0x01, 0x01]),
                0x01 => self.0.extend_from_slice(&[0x01, 0x02]),
                other => self.0.push(other),
            }
        }
        self.0.push(0x00);
        self
    }

    /// Appends a big-endian `u64`, which sorts numerically.
    pub fn push_u64(mut self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Appends raw bytes with no terminator: for the last, free-form part
    /// of a key that must stay prefix-scannable (plugin KV keys).
    pub fn push_raw(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.0.extend_from_slice(bytes.as_ref());
        self
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl AsRef<[u8]> for KeyBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Splits a key built only from [`KeyBuf::push`] components back into them.
pub fn split_components(key: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut bytes = key.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            0x00 => parts.push(std::mem::take(&mut current)),
            0x01 => match bytes.next() {
                Some(0x01) => current.push(0x00),
                Some(0x02) => current.push(0x01),
                _ => current.push(0x01),
            },
            other => current.push(other),
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_cannot_be_mistaken_for_a_prefix_of_another() {
        // "ab" + "c" and "a" + "bc" must differ, or one login could scan
        // another's keys.
        let one = KeyBuf::new().push("ab").push("c");
        let two = KeyBuf::new().push("a").push("bc");
        assert_ne!(one, two);
        // And the namespace "a" is not a prefix of the namespace "ab".
        let ns_a = KeyBuf::new().push("a");
        assert!(!one.as_bytes().starts_with(ns_a.as_bytes()));
    }

    #[test]
    fn components_with_terminator_bytes_round_trip() {
        let key = KeyBuf::new().push(b"x\x00y\x01z").push("plain");
        // Escaped bytes come back as they went in.
        assert_eq!(
            split_components(key.as_bytes()),
            vec![b"x\x00y\x01z".to_vec(), b"plain".to_vec()]
        );
    }

    #[test]
    fn numbers_sort_numerically() {
        let low = KeyBuf::new().push("l").push_u64(9);
        let high = KeyBuf::new().push("l").push_u64(10);
        // Big-endian encoding keeps outbox sequence numbers in order.
        assert!(low.as_bytes() < high.as_bytes());
    }
}
