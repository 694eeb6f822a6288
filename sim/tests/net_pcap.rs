//! A TCP exchange captured on a vif and on the switch: the files are
//! classic pcap that our reader and `tshark` both read, and show the TCP
//! handshake.

mod net_support;

use net_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use xenpal_drivers::net::NetConfig;
use xenpal_sim::backends::net::NetBackend;
use xenpal_sim::backends::net::pcap::{PcapPacket, read_pcap};
use xenpal_sim::{Sim, SimConfig};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The TCP flags of an Ethernet/IPv4/TCP frame, with its ports.
fn tcp_flags(frame: &[u8]) -> Option<(u16, u16, u8)> {
    if frame.len() < 54 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let tcp = &frame[14 + ihl..];
    Some((
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
        tcp[13],
    ))
}

fn handshake(pkts: &[PcapPacket]) -> Vec<(u16, u16, u8)> {
    pkts.iter()
        .filter_map(|p| tcp_flags(&p.data))
        .filter(|&(_, _, f)| f & SYN != 0)
        .collect()
}

fn tshark(path: &Path) -> String {
    let out = match Command::new("tshark").arg("-r").arg(path).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "tshark is not installed: this test checks our pcap files with it. \
             Install the Debian package `tshark` (apt-get install tshark)."
        ),
        Err(e) => panic!("running tshark: {e}"),
    };
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xenpal-net-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn pcap_of_a_tcp_exchange_shows_the_handshake() {
    const TOTAL: u64 = 256 * 1024;
    let seed = xenpal_sim::seed_from_env().unwrap_or(0x9cab);
    with_seed(seed, || {
        let dir = temp_dir();
        let (vif_file, bridge_file) = (dir.join("vif1.0.pcap"), dir.join("xenbr0.pcap"));
        let mut sim = Sim::new(SimConfig::seeded(seed));
        let mut net = NetBackend::new();
        // d1 is the sender spawned below.
        net.capture_vif(xenpal_sim::hal::DomId(1), 0, &vif_file)
            .unwrap();
        net.capture_bridge("xenbr0", &bridge_file).unwrap();
        let pair = spawn_tcp_pair(&mut sim, &net, TOTAL, NetConfig::default());
        let status = net.spawn(&mut sim).unwrap();
        assert_eq!(pair.sender, xenpal_sim::hal::DomId(1));
        let report = sim.run();
        assert!(report.all_clean(), "{report:?}\n{}", pair.consoles(&sim));
        assert_eq!(
            pair.outcome.lock().unwrap().received_sum,
            Some(stream_checksum(TOTAL))
        );

        // Our reader: every frame the vif carried, in both directions.
        let vif_pkts = read_pcap(&vif_file).unwrap();
        let c = status.vif(pair.sender, 0).unwrap().counters;
        assert_eq!(vif_pkts.len() as u64, c.from_guest + c.to_guest);
        assert!(vif_pkts.windows(2).all(|w| w[0].nanos <= w[1].nanos));
        let syns = handshake(&vif_pkts);
        assert!(syns.len() >= 2, "{syns:?}");
        assert_eq!(syns[0], (40000, PORT, SYN), "the sender's SYN first");
        assert_eq!(syns[1], (PORT, 40000, SYN | ACK), "then the SYN-ACK");
        let bytes: u64 = vif_pkts.iter().map(|p| p.data.len() as u64).sum();
        assert!(bytes > TOTAL, "{bytes}");
        // The switch saw every frame of both guests once.
        let all = read_pcap(&bridge_file).unwrap();
        assert!(
            all.len() >= vif_pkts.len(),
            "{} < {}",
            all.len(),
            vif_pkts.len()
        );
        assert_eq!(&handshake(&all)[..2], &syns[..2]);

        // tshark reads the same files and decodes the handshake.
        for file in [&vif_file, &bridge_file] {
            let text = tshark(file);
            let first_syn = text
                .lines()
                .position(|l| l.contains("[SYN]"))
                .unwrap_or_else(|| panic!("no SYN in tshark's view:\n{text}"));
            let syn_ack = text
                .lines()
                .position(|l| l.contains("[SYN, ACK]"))
                .unwrap_or_else(|| panic!("no SYN-ACK in tshark's view:\n{text}"));
            assert!(first_syn < syn_ack, "{text}");
            assert!(text.contains("40000 → 5001") || text.contains("40000 -> 5001"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
