//! Keys and values the way etcd's `benchmark` tool makes them.

use rand::RngExt;

/// Key number `n` as a `key_size`-byte key: big-endian, right-aligned, zero-padded.
pub fn key_bytes(n: u64, key_size: usize) -> Vec<u8> {
    let mut key = vec![0u8; key_size.max(1)];
    let be = n.to_be_bytes();
    let take = key.len().min(8);
    let at = key.len() - take;
    key[at..].copy_from_slice(&be[8 - take..]);
    key
}

/// Picks key numbers: sequential (`i % space`) or uniformly random in `0..space`.
#[derive(Clone, Copy, Debug)]
pub struct KeyPicker {
    pub space: u64,
    pub sequential: bool,
}

impl KeyPicker {
    /// The key number for operation `i`.
    pub fn pick(&self, i: u64, rng: &mut impl rand::Rng) -> u64 {
        let space = self.space.max(1);
        if self.sequential {
            i % space
        } else {
            rng.random_range(0..space)
        }
    }
}

/// `len` random bytes (one value shared by all puts, as etcd's tool does).
pub fn random_value(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill(&mut v[..]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_size_and_distinct() {
        assert_eq!(key_bytes(1, 8), vec![0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(key_bytes(258, 2), vec![1, 2]);
        assert_eq!(key_bytes(1, 10).len(), 10);
        assert_ne!(key_bytes(1, 8), key_bytes(2, 8));
    }

    #[test]
    fn sequential_keys_cycle_through_the_space() {
        let p = KeyPicker {
            space: 3,
            sequential: true,
        };
        let mut rng = rand::rng();
        let got: Vec<u64> = (0..6).map(|i| p.pick(i, &mut rng)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
        let r = KeyPicker {
            space: 5,
            sequential: false,
        };
        assert!((0..100).all(|i| r.pick(i, &mut rng) < 5));
    }
}
