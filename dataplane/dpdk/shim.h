/*
 * The C side of Switchyard's DPDK boundary.
 *
 * bindgen reads this header. It pulls in only the DPDK headers the appliance uses, and declares
 * `sy_*` wrappers for the DPDK `static inline` functions the appliance calls (burst RX/TX, rte_errno,
 * the TSC), which have no symbol in the shared libraries. Each is called at most once per burst; the
 * per-packet work happens in Rust on the mbuf's bytes and header fields.
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
int sy_errno(void);
uint64_t sy_rdtsc(void);
/* A new one-segment mbuf from the pool named `pool` holding a copy of `len` bytes, or NULL (no
 * such pool, pool empty, no room). For the few frames the appliance originates (neighbour
 * requests and announcements), never per received packet. */
struct rte_mbuf *sy_mbuf_from_bytes(const char *pool, const uint8_t *data, uint16_t len);

#endif
