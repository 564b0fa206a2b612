//! The checksum every log record of the embedded backend carries: the
//! record's bytes followed by the little-endian xxh3-64 of those bytes.
//!
//! fjall checks its journal batches and data blocks itself; this check
//! covers the record from the moment it was encoded to the moment it is
//! decoded, whatever layer damaged it, and names the record's position.

/// Bytes of the checksum at the end of a record.
pub(super) const CHECKSUM_LEN: usize = 8;

/// The checksum of `record`, to append after it. One-shot over contiguous
/// bytes: several times cheaper than the streaming hasher on records of a
/// few hundred bytes.
pub(super) fn of(record: &[u8]) -> [u8; CHECKSUM_LEN] {
    xxhash_rust::xxh3::xxh3_64(record).to_le_bytes()
}

/// The record inside `value` if its checksum holds; otherwise why not.
pub(super) fn open(value: &[u8]) -> Result<&[u8], &'static str> {
    let Some(split) = value.len().checked_sub(CHECKSUM_LEN) else {
        return Err("is too short to hold its checksum");
    };
    let (record, sum) = value.split_at(split);
    let mut stored = [0; CHECKSUM_LEN];
    stored.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(record) != u64::from_le_bytes(stored) {
        return Err("fails its checksum");
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seal(parts: &[&[u8]]) -> Vec<u8> {
        let mut out: Vec<u8> = parts.concat();
        let sum = of(&out);
        out.extend_from_slice(&sum);
        out
    }

    proptest! {
        #[test]
        fn a_sealed_record_opens_to_its_parts(a in proptest::collection::vec(any::<u8>(), 0..64), b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let value = seal(&[&a, &b]);
            let mut joined = a.clone();
            joined.extend_from_slice(&b);
            prop_assert_eq!(open(&value).unwrap(), &joined[..]);
        }

        #[test]
        fn any_flipped_bit_fails_the_checksum(a in proptest::collection::vec(any::<u8>(), 1..64), bit in any::<usize>()) {
            let mut value = seal(&[&a]);
            let bit = bit % (value.len() * 8);
            value[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open(&value).is_err());
        }
    }

    #[test]
    fn a_value_shorter_than_a_checksum_is_refused() {
        assert!(open(&[1, 2, 3]).is_err());
    }
}
