/* Out-of-line wrappers for DPDK's static inline functions; see shim.h. */
#include <string.h>
#include "shim.h"

uint16_t sy_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t sy_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

int sy_errno(void) { return rte_errno; }
uint64_t sy_rdtsc(void) { return rte_rdtsc(); }

struct rte_mbuf *sy_mbuf_from_bytes(const char *pool, const uint8_t *data, uint16_t len)
{
	struct rte_mempool *mp = rte_mempool_lookup(pool);
	if (mp == NULL)
		return NULL;
	struct rte_mbuf *m = rte_pktmbuf_alloc(mp);
	if (m == NULL)
		return NULL;
	char *room = rte_pktmbuf_append(m, len);
	if (room == NULL) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	memcpy(room, data, len);
	return m;
}
