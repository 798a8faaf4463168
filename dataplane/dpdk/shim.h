/*
 * The C side of Switchyard's DPDK boundary.
 *
 * bindgen reads this header. It pulls in only the DPDK headers the appliance uses, and declares
 * `sy_*` wrappers for DPDK's `static inline` fast-path functions (burst RX/TX, mbuf alloc/free and
 * headroom arithmetic), which have no symbol in the shared libraries. Each wrapper is called once per
 * burst or per mbuf operation; the per-packet header work happens in Rust on the mbuf's bytes.
 */
#ifndef SWITCHYARD_SHIM_H
#define SWITCHYARD_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_version.h>

uint16_t sy_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t sy_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
void sy_pktmbuf_free(struct rte_mbuf *m);
struct rte_mbuf *sy_pktmbuf_alloc(struct rte_mempool *mp);
int sy_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
char *sy_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *sy_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
char *sy_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int sy_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t sy_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t sy_pktmbuf_tailroom(const struct rte_mbuf *m);
uint32_t sy_mbuf_rss_hash(const struct rte_mbuf *m);
int sy_errno(void);
unsigned sy_lcore_id(void);
uint64_t sy_rdtsc(void);

#endif
