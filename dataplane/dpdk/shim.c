/* Out-of-line wrappers for DPDK's static inline functions; see shim.h. */
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
