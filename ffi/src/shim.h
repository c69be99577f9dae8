/* dpdk-sys shim: real functions for DPDK's static-inline fast path, and a mempool whose
 * mbufs are pinned to external buffers (slots) handed out by the caller's allocator. */
#ifndef DPDK_SYS_SHIM_H
#define DPDK_SYS_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_version.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_memory.h>
#include <rte_dev.h>
#include <rte_bus.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>

/* ---- fast path ---- */
uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *mp);
int shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void shim_pktmbuf_free(struct rte_mbuf *m);
void *shim_pktmbuf_mtod(struct rte_mbuf *m);
char *shim_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *shim_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *shim_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int shim_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t shim_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t shim_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t shim_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t shim_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t shim_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint64_t shim_pktmbuf_ol_flags(const struct rte_mbuf *m);
/* Copy `len` bytes at `off` of a (possibly chained) mbuf to `buf`; 0 on success. */
int shim_pktmbuf_copy_out(const struct rte_mbuf *m, uint32_t off, uint32_t len, void *buf);
/* Request tx checksum offload: ol_flags |= flags, l2_len, l3_len set. */
void shim_pktmbuf_tx_offload(struct rte_mbuf *m, uint64_t flags, uint16_t l2_len, uint16_t l3_len);
int shim_rte_errno(void);
unsigned shim_lcore_id(void);

/* ---- a mempool over external slots ----
 * The pool's free list is the caller's: dequeue calls `get` for slot indices, enqueue calls
 * `put`. Mbuf i is pinned (RTE_PKTMBUF_POOL_F_PINNED_EXT_BUF) to bytes
 * [base + i * slot_size, base + (i + 1) * slot_size). */
typedef int (*shim_slot_get_fn)(void *ctx, uint32_t *slots, unsigned n); /* 0: all n; <0: none */
typedef void (*shim_slot_put_fn)(void *ctx, const uint32_t *slots, unsigned n);
typedef unsigned (*shim_slot_count_fn)(void *ctx);

struct shim_extpool_cfg {
	const char *name;
	uint32_t n;          /* slots (= mbufs) */
	uint32_t slot_size;  /* bytes per slot, <= UINT16_MAX */
	uint16_t headroom;   /* data_off of a fresh mbuf */
	int socket_id;
	void *base;          /* slot 0 */
	uint64_t iova;       /* IOVA of base; RTE_BAD_IOVA when unknown */
	void *ctx;
	shim_slot_get_fn get;
	shim_slot_put_fn put;
	shim_slot_count_fn count;
};

/* NULL with rte_errno set on failure. */
struct rte_mempool *shim_extpool_create(const struct shim_extpool_cfg *cfg);
void shim_extpool_free(struct rte_mempool *mp);
/* The ctx of the extpool `m` came from, or NULL when it came from another pool. */
void *shim_extpool_ctx_of(const struct rte_mbuf *m);
/* Take a received mbuf's slot: on 0 the mbuf header is released (its slot now belongs to the
 * caller, who frees it through `put`); -1: not from an extpool; -2: chained; -3: shared. */
int shim_extpool_take(struct rte_mbuf *m, void **ctx, uint32_t *slot, uint32_t *off, uint32_t *len);
/* The mbuf of `slot`, reset to carry data [off, off + len) of the slot; the caller passes
 * ownership of the slot with it when the mbuf is handed to DPDK. */
struct rte_mbuf *shim_extpool_give(struct rte_mempool *mp, uint32_t slot, uint32_t off, uint32_t len);

#endif
