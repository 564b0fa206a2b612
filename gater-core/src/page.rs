//! Read pages bounded by bytes as well as by count: a page of events is cut
//! to what fits in one wire frame, so a read whose count is within its limit
//! never fails for its size. Readers page on from the last event they got.

use crate::event::RecordedEvent;

/// Bytes of a frame kept for what surrounds the events: the response's
/// variant and length prefix and the envelope's header.
pub const FRAME_HEADROOM_BYTES: u32 = 1024;

/// Cuts `events` to the longest prefix whose encoding fits in a frame of
/// `frame_bytes_max` bytes, keeping at least one event (an event is bounded
/// by `Limits::event_bytes_max`, far below any frame).
pub fn fit_in_frame(events: &mut Vec<RecordedEvent>, frame_bytes_max: u32) {
    let budget = frame_bytes_max.saturating_sub(FRAME_HEADROOM_BYTES) as usize;
    let mut used = 0usize;
    let keep = events
        .iter()
        .position(|event| {
            used = used.saturating_add(encoded_len(event));
            used > budget
        })
        .unwrap_or(events.len())
        .max(1);
    events.truncate(keep);
}

/// The exact length of `event`'s postcard encoding, without encoding it.
fn encoded_len(event: &RecordedEvent) -> usize {
    postcard::serialize_with_flavor(event, postcard::ser_flavors::Size::default())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventData, EventId, Position, StreamId};

    fn event(n: u64, bytes: usize) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new("s").unwrap(),
            version: n,
            position: Position(n),
            created_us: 1,
            data: EventData {
                id: EventId::from_bytes([n as u8; 16]),
                event_type: "E".to_owned(),
                data: vec![7; bytes],
                metadata: Vec::new(),
                content_type: crate::CONTENT_TYPE_JSON.to_owned(),
                tags: Vec::new(),
            },
        }
    }

    #[test]
    fn a_page_is_cut_to_what_fits_and_keeps_at_least_one_event() {
        let frame = 64 * 1024;
        let mut page: Vec<_> = (0..100).map(|n| event(n, 4096)).collect();
        fit_in_frame(&mut page, frame);
        let len: usize = page.iter().map(encoded_len).sum();
        assert!(len <= (frame - FRAME_HEADROOM_BYTES) as usize);
        assert_eq!(page.len(), 15, "4,096-byte events in a 63 KiB budget");
        assert_eq!(page.last().unwrap().version, 14);

        let mut big = vec![event(0, 100_000), event(1, 10)];
        fit_in_frame(&mut big, frame);
        assert_eq!(big.len(), 1, "one event is always kept");

        let mut small: Vec<_> = (0..10).map(|n| event(n, 10)).collect();
        fit_in_frame(&mut small, frame);
        assert_eq!(small.len(), 10, "a page that fits is untouched");
    }

    #[test]
    fn the_computed_length_is_the_encoded_length() {
        let e = event(3, 300);
        assert_eq!(encoded_len(&e), postcard::to_stdvec(&e).unwrap().len());
    }
}
