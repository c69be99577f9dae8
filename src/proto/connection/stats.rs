//! Per-connection counters.

/// Per-connection counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Datagrams written by `poll_transmit`.
    pub tx_packets: u64,
    /// DATA packets sent for the first time.
    pub tx_data: u64,
    /// Packets retransmitted.
    pub retransmits: u64,
    /// Packets declared lost (RACK, NACK or RTO).
    pub lost: u64,
    /// Lost packets later found to have arrived (spurious retransmissions).
    pub spurious: u64,
    /// Probe timeouts that fired.
    pub ptos: u64,
    /// ACKs sent.
    pub tx_acks: u64,
    /// Packets received for this connection.
    pub rx_packets: u64,
    /// Duplicate packets dropped.
    pub rx_duplicates: u64,
    /// Packets dropped for exceeding our credit, budgets or windows.
    pub rx_refused: u64,
    /// BATCH packets sent for the first time (also counted in `tx_data`).
    pub tx_batches: u64,
    /// Messages sent in those BATCH packets.
    pub tx_batched_msgs: u64,
    /// BATCH packets received and accepted.
    pub rx_batches: u64,
    /// Messages delivered.
    pub rx_messages: u64,
    /// Bytes of the messages delivered.
    pub rx_message_bytes: u64,
    /// Multi-packet messages delivered as their packet buffers
    /// ([`MsgData::Segments`](crate::proto::MsgData::Segments)).
    pub rx_segment_msgs: u64,
    /// Messages begun as segments and copied into a reassembly buffer instead because their
    /// packets were too small for the slots they held or came too far out of order
    /// ([`ConnectionConfig::rx_segments`](crate::proto::ConnectionConfig::rx_segments)).
    pub rx_segment_copied: u64,
    /// Single-packet messages copied out of their packet buffer (delivered as
    /// [`MsgData::Buffer`](crate::proto::MsgData::Buffer)) because this connection already
    /// held [`max_rx_slots`](crate::proto::ConnectionConfig::max_rx_slots) buffers for
    /// undelivered messages.
    pub rx_slots_copied: u64,
    /// Packets refused because growing a reassembly buffer failed to allocate (also counted
    /// in `rx_refused`): the allocator's refusal is a drop, never an abort.
    pub rx_alloc_failed: u64,
}
