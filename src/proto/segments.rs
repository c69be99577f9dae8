//! [`RecvSegments`]: a multi-packet message delivered as its packet buffers, in offset order,
//! with no copy ([`ConnectionConfig::rx_segments`](super::ConnectionConfig::rx_segments)).

use core::fmt;

use bytes::Bytes;

use crate::mem::PktBytes;

/// A multi-packet message as the packet buffers it arrived in (zero-copy receive, see
/// [`ConnectionConfig::rx_segments`](super::ConnectionConfig::rx_segments)).
///
/// The parts are read-only views of the receive buffers, in offset order, contiguous
/// (part *k* starts where part *k - 1* ends), none empty, and together exactly the message.
/// Each part holds its pool slot until it is dropped: hand the parts to a DMA engine (each
/// part's [offset](Self::iter_with_offsets) is its place in the message) and drop the message
/// (or the parts) when the copies completed.
///
/// Storage: one `Vec` of `(offset, PktBytes)` (40 bytes a part), allocated when the message's
/// first packet arrives with room for the packets a full-size sender needs: the one heap
/// allocation of a multi-packet message on this path (the copying path allocates the whole
/// message instead).
pub struct RecvSegments {
    /// `(offset, part)`, sorted by offset, contiguous from 0 to `len`.
    parts: Vec<(u64, PktBytes)>,
    len: usize,
}

impl RecvSegments {
    /// From parts the transport checked: sorted, contiguous from 0, no empty part.
    pub(crate) fn from_checked(parts: Vec<(u64, PktBytes)>, len: usize) -> RecvSegments {
        debug_assert!(parts.iter().map(|(_, p)| p.len()).sum::<usize>() == len);
        RecvSegments { parts, len }
    }

    /// Length of the message in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a message of no bytes (the transport never delivers one as segments).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many parts (packet buffers) hold the message.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Part `i` (in offset order), a view of its packet buffer.
    pub fn part(&self, i: usize) -> Option<&PktBytes> {
        self.parts.get(i).map(|(_, p)| p)
    }

    /// The parts' bytes in order.
    pub fn iter(&self) -> Parts<'_> {
        Parts(self.parts.iter())
    }

    /// The parts in order with the message offset of each.
    pub fn iter_with_offsets(
        &self,
    ) -> impl DoubleEndedIterator<Item = (u64, &PktBytes)> + ExactSizeIterator + '_ {
        self.parts.iter().map(|(o, p)| (*o, p))
    }

    /// The bytes, if the message is a single part (no copy); `None` when it spans several.
    pub fn as_single(&self) -> Option<&[u8]> {
        match &self.parts[..] {
            [(_, p)] => Some(p),
            _ => None,
        }
    }

    /// Copy the message into `dst` (one copy).
    ///
    /// # Panics
    /// If `dst.len() != self.len()` (as `<[u8]>::copy_from_slice`).
    pub fn copy_to_slice(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.len,
            "RecvSegments::copy_to_slice: destination length differs from the message's"
        );
        let mut off = 0;
        for p in self.iter() {
            dst[off..off + p.len()].copy_from_slice(p);
            off += p.len();
        }
    }

    /// The message as one `Vec` (copies every byte; allocates).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for p in self.iter() {
            v.extend_from_slice(p);
        }
        v
    }

    /// The message as one contiguous `Bytes`: copies every byte (one allocation), except for
    /// a single part, which is converted without a copy (one small allocation, as
    /// `PktBytes -> Bytes`).
    pub fn to_bytes(&self) -> Bytes {
        match &self.parts[..] {
            [(_, p)] => Bytes::from(p.clone()),
            _ => Bytes::from(self.to_vec()),
        }
    }

    /// The parts with their offsets (sorted, contiguous), to keep or hand on without the
    /// wrapper.
    pub fn into_parts(self) -> Vec<(u64, PktBytes)> {
        self.parts
    }
}

impl fmt::Debug for RecvSegments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvSegments")
            .field("len", &self.len)
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl<'a> IntoIterator for &'a RecvSegments {
    type Item = &'a [u8];
    type IntoIter = Parts<'a>;
    fn into_iter(self) -> Parts<'a> {
        self.iter()
    }
}

/// Iterator over the bytes of a [`RecvSegments`]' parts, in order.
#[derive(Debug, Clone)]
pub struct Parts<'a>(core::slice::Iter<'a, (u64, PktBytes)>);

impl<'a> Iterator for Parts<'a> {
    type Item = &'a [u8];
    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        self.0.next().map(|(_, p)| &p[..])
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Parts<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(_, p)| &p[..])
    }
}

impl ExactSizeIterator for Parts<'_> {}
