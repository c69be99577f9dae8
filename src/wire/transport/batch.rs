//! The body of a BATCH packet: the length table and the messages behind it.

use super::{Error, BATCH_ENTRY_LEN};

/// The messages of a BATCH packet: `body` is what follows the header (the length table of
/// `count` little-endian u16 entries, then the messages back to back). Checks that the table
/// fits and that the messages fill the rest exactly; the iterator then yields each message's
/// byte range in `body`, in order, all in bounds. Allocates nothing.
pub fn batch_entries(body: &[u8], count: u16) -> Result<BatchEntries<'_>, Error> {
    let table_len = usize::from(count) * BATCH_ENTRY_LEN;
    let Some(table) = body.get(..table_len) else {
        return Err(Error::Malformed);
    };
    let sum: usize = table
        .chunks_exact(BATCH_ENTRY_LEN)
        .map(|e| usize::from(u16::from_le_bytes([e[0], e[1]])))
        .sum();
    if sum != body.len() - table_len {
        return Err(Error::Malformed);
    }
    Ok(BatchEntries {
        table,
        next: table_len,
        end: body.len(),
    })
}

/// Iterator over a checked BATCH body's message ranges (from [`batch_entries`]).
#[derive(Debug, Clone)]
pub struct BatchEntries<'a> {
    table: &'a [u8],
    next: usize,
    /// The body's length: no range goes past it.
    end: usize,
}

impl Iterator for BatchEntries<'_> {
    type Item = core::ops::Range<usize>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (e, rest) = self.table.split_first_chunk::<BATCH_ENTRY_LEN>()?;
        self.table = rest;
        let start = self.next;
        // The table was checked by `batch_entries`, but it is read again here, and over
        // memif it is memory the peer can still write: a length changed since would point
        // past the body. Such an entry ends the iteration, so no range ever leaves the body
        // (the peer can only spoil what it sent itself).
        let end = start
            .checked_add(usize::from(u16::from_le_bytes(*e)))
            .filter(|&e| e <= self.end)?;
        self.next = end;
        Some(start..end)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.table.len() / BATCH_ENTRY_LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for BatchEntries<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length table that changed after it was checked (a memif peer writing the packet
    /// while it is read) yields ranges inside the body only, then stops.
    #[test]
    fn a_table_changed_after_the_check_stays_inside_the_body() {
        let body = [2u8, 0, 3, 0, b'a', b'b', b'c', b'd', b'e'];
        let ok: Vec<_> = batch_entries(&body, 2).unwrap().collect();
        assert_eq!(ok, [4..6, 6..9]);
        // As if the peer rewrote the lengths to 1000 and 2 after batch_entries returned.
        let changed = [0xe8u8, 0x03, 2, 0];
        let it = BatchEntries {
            table: &changed,
            next: 4,
            end: body.len(),
        };
        let got: Vec<_> = it.collect();
        assert!(got.is_empty(), "{got:?}");
        let changed = [1u8, 0, 200, 0];
        let it = BatchEntries {
            table: &changed,
            next: 4,
            end: body.len(),
        };
        let got: Vec<_> = it.collect();
        assert_eq!(got, vec![4..5], "the second range would end at 205");
        for r in got {
            assert!(body.get(r).is_some());
        }
    }
}
