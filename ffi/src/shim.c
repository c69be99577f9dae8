#include "shim.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }
uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }
struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n)
{ return rte_pktmbuf_alloc_bulk(mp, mbufs, n); }
void shim_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void *shim_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
char *shim_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *shim_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *shim_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int shim_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint16_t shim_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t shim_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t shim_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t shim_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint16_t shim_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
uint64_t shim_pktmbuf_ol_flags(const struct rte_mbuf *m) { return m->ol_flags; }
int shim_pktmbuf_copy_out(const struct rte_mbuf *m, uint32_t off, uint32_t len, void *buf)
{
	const void *p = rte_pktmbuf_read(m, off, len, buf);
	if (p == NULL)
		return -1;
	if (p != buf)
		memcpy(buf, p, len);
	return 0;
}
void shim_pktmbuf_tx_offload(struct rte_mbuf *m, uint64_t flags, uint16_t l2_len, uint16_t l3_len)
{
	m->ol_flags |= flags;
	m->l2_len = l2_len;
	m->l3_len = l3_len;
}
int shim_rte_errno(void) { return rte_errno; }
unsigned shim_lcore_id(void) { return rte_lcore_id(); }

/* ---- extpool ---- */

struct shim_extpool {
	struct shim_extpool_cfg cfg;
	struct rte_mbuf **mbufs; /* by slot */
	uint32_t added;
	int populating;
	int freeing;
};

#define SHIM_OPS_NAME "bypass_slots"
#define CHUNK 64

static int ops_index = -1;
static pthread_once_t ops_once = PTHREAD_ONCE_INIT;

static inline struct shim_extpool *state_of(const struct rte_mempool *mp)
{
	return (struct shim_extpool *)mp->pool_config;
}

static inline uint32_t slot_of(const struct shim_extpool *s, const struct rte_mbuf *m)
{
	return (uint32_t)(((const char *)m->buf_addr - (const char *)s->cfg.base) / s->cfg.slot_size);
}

static int ops_alloc(struct rte_mempool *mp)
{
	mp->pool_data = mp->pool_config;
	return 0;
}

static void ops_free(struct rte_mempool *mp) { (void)mp; }

static int ops_enqueue(struct rte_mempool *mp, void *const *objs, unsigned n)
{
	struct shim_extpool *s = state_of(mp);
	uint32_t slots[CHUNK];
	unsigned i, k = 0;

	if (s->populating) {
		/* populate hands every new object over once, in order: remember them; the
		 * caller's allocator already holds every slot as free. */
		for (i = 0; i < n; i++) {
			if (s->added >= s->cfg.n)
				return -ENOBUFS;
			s->mbufs[s->added++] = objs[i];
		}
		return 0;
	}
	for (i = 0; i < n; i++) {
		slots[k++] = slot_of(s, objs[i]);
		if (k == CHUNK) {
			s->cfg.put(s->cfg.ctx, slots, k);
			k = 0;
		}
	}
	if (k)
		s->cfg.put(s->cfg.ctx, slots, k);
	return 0;
}

static int ops_dequeue(struct rte_mempool *mp, void **objs, unsigned n)
{
	struct shim_extpool *s = state_of(mp);
	uint32_t slots[CHUNK];
	unsigned done = 0;

	if (s->freeing) {
		/* rte_mempool_free drains the pool one object per element before releasing the
		 * memory; the objects are discarded, so take no slot for them. */
		for (done = 0; done < n; done++)
			objs[done] = s->mbufs[0];
		return 0;
	}
	while (done < n) {
		unsigned k = n - done < CHUNK ? n - done : CHUNK, i;
		if (s->cfg.get(s->cfg.ctx, slots, k) != 0) {
			/* all or nothing: give back what this call took */
			unsigned j = 0;
			while (j < done) {
				unsigned m = done - j < CHUNK ? done - j : CHUNK, t;
				for (t = 0; t < m; t++)
					slots[t] = slot_of(s, objs[j + t]);
				s->cfg.put(s->cfg.ctx, slots, m);
				j += m;
			}
			return -ENOBUFS;
		}
		for (i = 0; i < k; i++)
			objs[done + i] = s->mbufs[slots[i]];
		done += k;
	}
	return 0;
}

static unsigned ops_get_count(const struct rte_mempool *mp)
{
	const struct shim_extpool *s = state_of(mp);
	return s->cfg.count(s->cfg.ctx);
}

static struct rte_mempool_ops shim_ops = {
	.name = SHIM_OPS_NAME,
	.alloc = ops_alloc,
	.free = ops_free,
	.enqueue = ops_enqueue,
	.dequeue = ops_dequeue,
	.get_count = ops_get_count,
};

static void register_ops(void)
{
	ops_index = rte_mempool_register_ops(&shim_ops);
}

static void noop_free_cb(void *addr, void *opaque) { (void)addr; (void)opaque; }

struct rte_mempool *shim_extpool_create(const struct shim_extpool_cfg *cfg)
{
	struct rte_pktmbuf_pool_private priv;
	struct shim_extpool *s;
	struct rte_mempool *mp;
	unsigned elt = sizeof(struct rte_mbuf) + sizeof(struct rte_mbuf_ext_shared_info);
	uint32_t i;

	if (cfg->n == 0 || cfg->slot_size == 0 || cfg->slot_size > UINT16_MAX ||
	    cfg->headroom > cfg->slot_size || !cfg->get || !cfg->put || !cfg->count) {
		rte_errno = EINVAL;
		return NULL;
	}
	pthread_once(&ops_once, register_ops);
	if (ops_index < 0) {
		rte_errno = -ops_index;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		rte_errno = ENOMEM;
		return NULL;
	}
	s->cfg = *cfg;
	s->mbufs = calloc(cfg->n, sizeof(*s->mbufs));
	if (!s->mbufs) {
		free(s);
		rte_errno = ENOMEM;
		return NULL;
	}
	mp = rte_mempool_create_empty(cfg->name, cfg->n, elt, 0,
				      sizeof(struct rte_pktmbuf_pool_private), cfg->socket_id, 0);
	if (!mp)
		goto fail;
	if (rte_mempool_set_ops_byname(mp, SHIM_OPS_NAME, s) != 0)
		goto fail_mp;
	memset(&priv, 0, sizeof(priv));
	priv.mbuf_data_room_size = (uint16_t)cfg->slot_size;
	priv.mbuf_priv_size = 0;
	priv.flags = RTE_PKTMBUF_POOL_F_PINNED_EXT_BUF;
	rte_pktmbuf_pool_init(mp, &priv);

	s->populating = 1;
	if (rte_mempool_populate_default(mp) < 0 || s->added != cfg->n) {
		s->populating = 0;
		goto fail_mp;
	}
	s->populating = 0;

	for (i = 0; i < cfg->n; i++) {
		struct rte_mbuf *m = s->mbufs[i];
		struct rte_mbuf_ext_shared_info *shinfo;

		memset(m, 0, sizeof(*m));
		m->priv_size = 0;
		m->buf_len = (uint16_t)cfg->slot_size;
		m->buf_addr = (char *)cfg->base + (size_t)i * cfg->slot_size;
		rte_mbuf_iova_set(m, cfg->iova == RTE_BAD_IOVA ? RTE_BAD_IOVA :
				  cfg->iova + (uint64_t)i * cfg->slot_size);
		m->data_off = cfg->headroom;
		m->pool = mp;
		m->nb_segs = 1;
		m->port = RTE_MBUF_PORT_INVALID;
		m->ol_flags = RTE_MBUF_F_EXTERNAL;
		rte_mbuf_refcnt_set(m, 1);
		m->next = NULL;
		shinfo = (struct rte_mbuf_ext_shared_info *)(m + 1);
		m->shinfo = shinfo;
		shinfo->free_cb = noop_free_cb;
		shinfo->fcb_opaque = m;
		rte_mbuf_ext_refcnt_set(shinfo, 1);
	}
	return mp;

fail_mp:
	{
		int e = rte_errno;
		rte_mempool_free(mp);
		rte_errno = e ? e : EINVAL;
	}
fail:
	free(s->mbufs);
	free(s);
	if (!rte_errno)
		rte_errno = ENOMEM;
	return NULL;
}

void shim_extpool_free(struct rte_mempool *mp)
{
	struct shim_extpool *s;

	if (!mp)
		return;
	s = state_of(mp);
	if (s)
		s->freeing = 1;
	rte_mempool_free(mp);
	if (s) {
		free(s->mbufs);
		free(s);
	}
}

void *shim_extpool_ctx_of(const struct rte_mbuf *m)
{
	if (ops_index < 0 || m->pool == NULL || m->pool->ops_index != ops_index)
		return NULL;
	return state_of(m->pool)->cfg.ctx;
}

int shim_extpool_take(struct rte_mbuf *m, void **ctx, uint32_t *slot, uint32_t *off, uint32_t *len)
{
	struct shim_extpool *s;

	if (ops_index < 0 || m->pool == NULL || m->pool->ops_index != ops_index)
		return -1;
	if (m->nb_segs != 1 || m->next != NULL)
		return -2;
	if (rte_mbuf_refcnt_read(m) != 1)
		return -3;
	s = state_of(m->pool);
	*ctx = s->cfg.ctx;
	*slot = slot_of(s, m);
	*off = m->data_off;
	*len = m->data_len;
	return 0;
}

struct rte_mbuf *shim_extpool_give(struct rte_mempool *mp, uint32_t slot, uint32_t off, uint32_t len)
{
	struct shim_extpool *s = state_of(mp);
	struct rte_mbuf *m;

	if (slot >= s->cfg.n || off + len > s->cfg.slot_size)
		return NULL;
	m = s->mbufs[slot];
	m->data_off = (uint16_t)off;
	m->data_len = (uint16_t)len;
	m->pkt_len = len;
	m->nb_segs = 1;
	m->next = NULL;
	m->ol_flags = RTE_MBUF_F_EXTERNAL;
	m->packet_type = 0;
	m->tx_offload = 0;
	m->vlan_tci = 0;
	m->port = RTE_MBUF_PORT_INVALID;
	rte_mbuf_refcnt_set(m, 1);
	rte_mbuf_ext_refcnt_set(m->shinfo, 1);
	return m;
}
