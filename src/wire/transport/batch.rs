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
    })
}

/// Iterator over a checked BATCH body's message ranges (from [`batch_entries`]).
#[derive(Debug, Clone)]
pub struct BatchEntries<'a> {
    table: &'a [u8],
    next: usize,
}

impl Iterator for BatchEntries<'_> {
    type Item = core::ops::Range<usize>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (e, rest) = self.table.split_first_chunk::<BATCH_ENTRY_LEN>()?;
        self.table = rest;
        let start = self.next;
        self.next += usize::from(u16::from_le_bytes(*e));
        Some(start..self.next)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.table.len() / BATCH_ENTRY_LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for BatchEntries<'_> {}
