/*
 * iofwd: the minimal C rx -> tx loop that Switchyard's forward mode is measured against.
 *
 * Same shape as `switchyard-dataplane forward` with one worker: every port gets one RX and one TX
 * queue and buffers from one mempool; the worker lcore moves bursts of 32 from port p to port p^1
 * (or back out of p when it has no partner) and frees what TX did not take. No processing, no
 * retries beyond what the Rust side does, no statistics in the loop beyond three counters.
 *
 * Usage: iofwd <seconds> <mbufs> -- <EAL args>     prints
 *   RESULT mode=c-iofwd workers=1 rx_pkts=N tx_pkts=N dropped=N mpps=F
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#define BURST 32
#define RETRIES 8

static volatile int stop;
static uint64_t rx_total, tx_total, drop_total;
/* Packets received so far, for the per-second rate lines (written by the worker only). */
static uint64_t rx_live;

static int worker(void *arg)
{
	uint16_t nports = *(uint16_t *)arg;
	struct rte_mbuf *pkts[BURST];
	uint64_t rx = 0, tx = 0, dropped = 0;

	while (!stop) {
		for (uint16_t p = 0; p < nports; p++) {
			uint16_t peer = (p ^ 1) < nports ? (p ^ 1) : p;
			uint16_t n = rte_eth_rx_burst(p, 0, pkts, BURST);
			if (n == 0)
				continue;
			uint16_t sent = 0, tries = 0;
			while (sent < n) {
				uint16_t k = rte_eth_tx_burst(peer, 0, pkts + sent, n - sent);
				sent += k;
				if (k == 0 && tries++ >= RETRIES)
					break;
			}
			if (sent < n)
				rte_pktmbuf_free_bulk(pkts + sent, n - sent);
			rx += n;
			__atomic_store_n(&rx_live, rx, __ATOMIC_RELAXED);
			tx += sent;
			dropped += n - sent;
		}
	}
	rx_total = rx;
	tx_total = tx;
	drop_total = dropped;
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s <seconds> <mbufs> -- <EAL args>\n", argv[0]);
		return 2;
	}
	double seconds = atof(argv[1]);
	unsigned mbufs = (unsigned)atoi(argv[2]);
	/* argv[3] is "--": hand the EAL "iofwd" + the rest. */
	argv[3] = argv[0];
	int ret = rte_eal_init(argc - 3, argv + 3);
	if (ret < 0) {
		fprintf(stderr, "rte_eal_init failed\n");
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	uint16_t nports = rte_eth_dev_count_avail();
	/* IOFWD_DATA_ROOM (bytes per buffer with headroom) shrinks the buffers so a large
	 * net_pcap infinite_rx capture, preloaded into the pool, fits the hugepages. */
	const char *room_env = getenv("IOFWD_DATA_ROOM");
	uint16_t room = room_env ? (uint16_t)atoi(room_env) : RTE_MBUF_DEFAULT_BUF_SIZE;
	struct rte_mempool *pool = rte_pktmbuf_pool_create("iofwd_pool", mbufs, 256, 0,
							   room, rte_socket_id());
	if (pool == NULL || nports == 0) {
		fprintf(stderr, "no mempool or no port\n");
		return 1;
	}
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof(conf));
	for (uint16_t p = 0; p < nports; p++) {
		uint16_t rxd = 1024, txd = 1024;
		if (rte_eth_dev_configure(p, 1, 1, &conf) != 0 ||
		    rte_eth_dev_adjust_nb_rx_tx_desc(p, &rxd, &txd) != 0 ||
		    rte_eth_rx_queue_setup(p, 0, rxd, rte_eth_dev_socket_id(p) < 0 ? 0 : rte_eth_dev_socket_id(p), NULL, pool) != 0 ||
		    rte_eth_tx_queue_setup(p, 0, txd, rte_eth_dev_socket_id(p) < 0 ? 0 : rte_eth_dev_socket_id(p), NULL) != 0 ||
		    rte_eth_dev_start(p) != 0) {
			fprintf(stderr, "port %u setup failed\n", p);
			return 1;
		}
	}
	unsigned lcore = rte_get_next_lcore(-1, 1, 0);
	if (lcore >= RTE_MAX_LCORE) {
		fprintf(stderr, "need a worker lcore (-l 0-1)\n");
		return 1;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rte_eal_remote_launch(worker, &nports, lcore);
	struct timespec nap = {0, 10 * 1000 * 1000};
	double last_el = 0;
	uint64_t last_rx = 0;
	for (;;) {
		nanosleep(&nap, NULL);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
		if (el - last_el >= 1.0) {
			/* Same shape as switchyard-dataplane's rate lines. */
			uint64_t rx = __atomic_load_n(&rx_live, __ATOMIC_RELAXED);
			printf("c-iofwd: rx %.3f Mpps | total rx=%lu\n", (rx - last_rx) / (el - last_el) / 1e6,
			       (unsigned long)rx);
			fflush(stdout);
			last_el = el;
			last_rx = rx;
		}
		if (stop || el >= seconds)
			break;
	}
	stop = 1;
	rte_eal_wait_lcore(lcore);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	for (uint16_t p = 0; p < nports; p++) {
		rte_eth_dev_stop(p);
		rte_eth_dev_close(p);
	}
	rte_mempool_free(pool);
	rte_eal_cleanup();
	printf("RESULT mode=c-iofwd workers=1 rx_pkts=%lu tx_pkts=%lu dropped=%lu mpps=%.3f\n",
	       (unsigned long)rx_total, (unsigned long)tx_total, (unsigned long)drop_total,
	       rx_total / el / 1e6);
	return 0;
}
