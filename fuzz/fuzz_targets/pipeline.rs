//! The whole data-plane pipeline: frames in, verdicts and rewritten frames out.
//!
//! `fuzz/pipeline.yaml`, compiled by the real policy compiler into `fuzz/pipeline.gen` (ci/fuzz
//! does it; by hand: `cargo run -p switchyard-control -- compile fuzz/pipeline.yaml -o
//! fuzz/pipeline.gen` from the repository root), is loaded once and used as written (IPIP) and
//! with GUE encapsulation. The compiler is not linked into the target: its HTTP and async
//! dependencies would more than double the instrumented build. Each input is a sequence of frames, each
//! received on some port at some time:
//!
//! ```text
//! byte 0          bit 0: the GUE generation instead of the IPIP one
//! then, per frame: meta u8   bits 0-1: RX port (0 uplink, 1 inside, 2 kernel, 3 unbound)
//!                            bits 2-7: d, the clock advances d² × 16 ms before this frame
//!                  len u16   big-endian; a length past the end takes what is left
//!                  len bytes the frame, from the Ethernet header on (its first 2048 bytes:
//!                            what one mbuf holds)
//! ```
//!
//! A fresh [`PipelineWorker`] runs the frames in order with `process` and `housekeeping`, so
//! flows are created, hit, expire and are swept. Properties checked on every frame:
//! - no panic, no hang (libFuzzer's timeout), whatever the bytes;
//! - `Forward` names an existing port, and the frame the worker built (anything not passed
//!   through from the kernel port) parses: Ethernet, ARP or IPv4 with a good header checksum or
//!   IPv6;
//! - exactly one drop counter moves when the verdict is `Drop`, none otherwise.
//!
//! Then two more fresh workers run the same frames at one fixed time, one with `process` per
//! frame and one with `process_burst` per run of frames from the same port: the module doc
//! promises the same results, so verdicts, output bytes, counters and flow counts must agree.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switchyard::flow::InsertLimit;
use switchyard::pipeline::{
    PacketBuf, PipelineWorker, PortIndex, PortMap, VecPacket, Verdict, WorkerConfig,
};
use switchyard::wire::{arp, ethernet, ipv4, ipv6, EtherType};
use switchyard_table::generation::{Generation, ENCAP_GUE};

/// The compiled `fuzz/pipeline.yaml` (ignored by git; ci/fuzz writes it).
const GENERATION_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pipeline.gen");
/// Frames per input; more adds run time, not coverage.
const MAX_FRAMES: usize = 48;
const PORTS: usize = 4;
const KERNEL_PORT: PortIndex = 2;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let generations = generations();
    let g = &generations[usize::from(flags & 1)];

    let mut frames: Vec<(PortIndex, u32, &[u8])> = Vec::new();
    while rest.len() >= 3 && frames.len() < MAX_FRAMES {
        let meta = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let body = &rest[3..];
        let len = len.min(body.len());
        let d = u32::from(meta >> 2);
        // One mbuf holds at most its data room; longer frames arrive as chains, which the
        // appliance drops before the pipeline (`drop_multi_segment`).
        let frame = &body[..len.min(VecPacket::CAPACITY)];
        frames.push((PortIndex::from(meta & 3), d * d * 16, frame));
        rest = &body[len..];
    }

    sequential(g, &frames);
    burst_matches_process(g, &frames);
});

/// The IPIP and the GUE generation of the policy.
fn generations() -> &'static [Arc<Generation>; 2] {
    static GENERATIONS: OnceLock<[Arc<Generation>; 2]> = OnceLock::new();
    GENERATIONS.get_or_init(|| {
        let blob = std::fs::read(GENERATION_FILE).unwrap_or_else(|e| {
            panic!(
                "{GENERATION_FILE}: {e}\ncompile the fuzz policy first (from the repository \
                 root):\n  cargo run -p switchyard-control -- compile fuzz/pipeline.yaml -o \
                 fuzz/pipeline.gen"
            )
        });
        let ipip = Generation::decode(&blob)
            .unwrap_or_else(|e| panic!("{GENERATION_FILE}: {e}; compile it again"));
        // What the compiler does for `encap: gue` (port 6080): only the config changes.
        let mut gue = ipip.clone();
        gue.generation += 1;
        gue.config.encap = ENCAP_GUE;
        gue.config.gue_port = 6080;
        gue.validate().expect("GUE variant validates");
        [Arc::new(ipip), Arc::new(gue)]
    })
}

fn worker(g: &Arc<Generation>) -> PipelineWorker {
    let mut w = PipelineWorker::new(WorkerConfig {
        flows_v4: 1024,
        flows_v6: 1024,
        insert_limit: InsertLimit::default(),
        ports: PortMap {
            interface: vec![Some("uplink".into()), Some("inside".into()), None, None],
            backend: Some(1),
            kernel: Some(KERNEL_PORT),
        },
        worker: 0,
    });
    w.set_generation(Arc::clone(g));
    w.set_worker_count(2);
    w
}

fn sequential(g: &Arc<Generation>, frames: &[(PortIndex, u32, &[u8])]) {
    let mut w = worker(g);
    let mut now: u32 = 1_000;
    for &(port, dt, frame) in frames {
        now = now.wrapping_add(dt);
        let mut pkt = VecPacket::new(frame);
        let drops = w.counters().drops();
        let verdict = w.process(&mut pkt, port, now);
        let counted = w.counters().drops() - drops;
        assert_eq!(
            counted,
            u64::from(verdict == Verdict::Drop),
            "{verdict:?} moved {counted} drop counters"
        );
        check_output(verdict, port, frame, pkt.data());
        w.housekeeping(now);
    }
}

fn check_output(verdict: Verdict, rx: PortIndex, input: &[u8], out: &[u8]) {
    let Verdict::Forward(port) = verdict else {
        return;
    };
    assert!(usize::from(port) < PORTS, "forwarded to port {port}");
    if rx == KERNEL_PORT {
        assert_eq!(out, input, "kernel frames leave untouched");
        return;
    }
    // Everything else forwarded was built or rewritten by the worker.
    let frame = ethernet::Frame::new_checked(out).expect("output frame has an Ethernet header");
    let l2 = frame
        .parse_l2()
        .expect("output frame has a valid tag stack");
    let l3 = frame.l3_payload(&l2);
    match l2.ethertype {
        EtherType::ARP => {
            arp::Packet::new_checked(l3).expect("output ARP parses");
        }
        EtherType::IPV4 => {
            let ip = ipv4::Packet::new_checked(l3).expect("output IPv4 parses");
            assert!(ip.verify_checksum(), "output IPv4 header checksum");
        }
        EtherType::IPV6 => {
            ipv6::Packet::new_checked(l3).expect("output IPv6 parses");
        }
        other => panic!("forwarded a frame of ethertype {other}"),
    }
}

fn burst_matches_process(g: &Arc<Generation>, frames: &[(PortIndex, u32, &[u8])]) {
    const NOW: u32 = 5_000;
    let mut one = worker(g);
    let mut burst = worker(g);
    let mut i = 0;
    while i < frames.len() {
        let port = frames[i].0;
        let run = frames[i..].iter().take_while(|f| f.0 == port).count();
        let mut singles: Vec<VecPacket> = Vec::with_capacity(run);
        let mut expect = Vec::with_capacity(run);
        for &(_, _, frame) in &frames[i..i + run] {
            let mut pkt = VecPacket::new(frame);
            expect.push(one.process(&mut pkt, port, NOW));
            singles.push(pkt);
        }
        let mut pkts: Vec<VecPacket> = frames[i..i + run]
            .iter()
            .map(|f| VecPacket::new(f.2))
            .collect();
        let mut verdicts = vec![Verdict::Drop; run];
        burst.process_burst(&mut pkts, port, NOW, &mut verdicts);
        for (k, ((a, b), (va, vb))) in singles
            .iter()
            .zip(&pkts)
            .zip(expect.iter().zip(&verdicts))
            .enumerate()
        {
            assert_eq!(va, vb, "frame {}: process vs process_burst verdict", i + k);
            if *va != Verdict::Drop {
                assert_eq!(a.data(), b.data(), "frame {}: output bytes differ", i + k);
            }
        }
        i += run;
    }
    assert_eq!(
        one.counters(),
        burst.counters(),
        "counters after process vs process_burst"
    );
    assert_eq!(one.flow_count(), burst.flow_count());
}
