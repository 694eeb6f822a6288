//! Large sends (`feature-gso-tcpv4`) for a TCP stack that knows nothing of
//! them.
//!
//! smoltcp makes TCP segments no longer than the smaller of the device's
//! MTU and the peer's MSS, and has no notion of a segmentation offload. So
//! that it hands us segments of up to 64 KiB, which the backend cuts into
//! link-sized packets (dom0's cost is per packet, not per byte):
//!
//! - the device tells smoltcp its MTU is [`MAX_FRAME`] (not the link's);
//! - every SYN we send has its MSS option lowered to the link's MSS, so
//!   peers see the truth ([`clamp_mss`]);
//! - every SYN we receive whose MSS option is at least the link's MSS, and
//!   whose checksum is right, has it raised to [`BIG_MSS`] before smoltcp
//!   sees it ([`raise_mss`]): a peer that asked for less than the link
//!   carries (a tunnel's smaller MSS) keeps what it asked for, and smoltcp
//!   sends it short segments that need no cutting;
//! - a TCP/IPv4 frame longer than the link's goes out with a GSO extra-info
//!   slot whose size is the link's MTU less this packet's IP and TCP
//!   headers, so that every segment the backend makes fits the link
//!   ([`crossing`]). Any other frame longer than the link's is dropped, as
//!   smoltcp would have done with the link's MTU.
//!
//! Frames received here come from the network, so every parse is bounded
//! and a frame that is not plain, unfragmented TCP/IPv4 is left alone.

use super::{ETHERNET_HEADER, MAX_FRAME};
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

/// Size of the IPv4 and TCP headers without options.
const HEADERS: usize = 40;

/// The MSS smoltcp is told a peer accepts: what a [`MAX_FRAME`] frame holds.
pub const BIG_MSS: u16 = (MAX_FRAME - ETHERNET_HEADER - HEADERS) as u16;

/// EtherType of IPv4.
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// TCP option kinds (RFC 9293).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// Where the headers of a TCP/IPv4 frame are.
struct TcpV4 {
    /// Offset of the TCP header in the frame.
    tcp: usize,
    /// End of the IP packet in the frame (Ethernet padding excluded).
    end: usize,
    /// Length of the IP header.
    ip_header: usize,
    /// Length of the TCP header, options included.
    tcp_header: usize,
    src: IpAddress,
    dst: IpAddress,
}

/// Parse `frame` as an unfragmented TCP segment in IPv4 in Ethernet.
fn tcp_v4(frame: &[u8]) -> Option<TcpV4> {
    if frame.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(frame.get(ETHERNET_HEADER..)?).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let ip_header = usize::from(ip.header_len());
    let end = ETHERNET_HEADER + usize::from(ip.total_len());
    let tcp = ETHERNET_HEADER + ip_header;
    let seg = TcpPacket::new_checked(frame.get(tcp..end)?).ok()?;
    Some(TcpV4 {
        tcp,
        end,
        ip_header,
        tcp_header: usize::from(seg.header_len()),
        src: ip.src_addr().into(),
        dst: ip.dst_addr().into(),
    })
}

/// Offset, in `options`, of a SYN's MSS option value; `None` if there is
/// none or the options are malformed.
fn mss_option(options: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            OPT_END => return None,
            OPT_NOP => at += 1,
            kind => {
                let len = usize::from(*options.get(at + 1)?);
                if len < 2 || at + len > options.len() {
                    return None;
                }
                if kind == OPT_MSS {
                    return (len == 4).then_some(at + 2);
                }
                at += len;
            }
        }
    }
    None
}

/// If `frame` is a TCP/IPv4 SYN with an MSS option, replace the option's
/// value by what `change` returns for it (`None`: leave it) and fix the
/// checksum. With `verify`, a segment whose checksum is wrong is left as
/// it is (smoltcp will drop it). Returns whether the frame changed.
fn rewrite_mss(frame: &mut [u8], verify: bool, change: impl FnOnce(u16) -> Option<u16>) -> bool {
    let Some(h) = tcp_v4(frame) else {
        return false;
    };
    let Ok(mut seg) = TcpPacket::new_checked(&mut frame[h.tcp..h.end]) else {
        return false;
    };
    if !seg.syn() || (verify && !seg.verify_checksum(&h.src, &h.dst)) {
        return false;
    }
    let Some(at) = mss_option(seg.options_mut()) else {
        return false;
    };
    let opts = seg.options_mut();
    let old = u16::from_be_bytes([opts[at], opts[at + 1]]);
    let Some(new) = change(old).filter(|&new| new != old) else {
        return false;
    };
    opts[at..at + 2].copy_from_slice(&new.to_be_bytes());
    seg.fill_checksum(&h.src, &h.dst);
    true
}

/// The MSS of a link whose IP MTU is `mtu`.
pub fn link_mss(mtu: usize) -> u16 {
    mtu.saturating_sub(HEADERS).min(usize::from(u16::MAX)) as u16
}

/// A received SYN: raise an MSS option of at least `link_mss` to
/// [`BIG_MSS`] (checksum verified first, then fixed). Returns whether the
/// frame changed.
pub fn raise_mss(frame: &mut [u8], link_mss: u16) -> bool {
    rewrite_mss(frame, true, |mss| (mss >= link_mss).then_some(BIG_MSS))
}

/// A SYN we send: lower an MSS option above `link_mss` to it. Returns
/// whether the frame changed.
pub fn clamp_mss(frame: &mut [u8], link_mss: u16) -> bool {
    rewrite_mss(frame, false, |mss| (mss > link_mss).then_some(link_mss))
}

/// A received frame whose TCP or UDP checksum the backend left blank
/// (`NETRXF_csum_blank`: the sender offloaded it, and no device on the way
/// filled it in): compute it, whatever the field held. Returns `false` if
/// the frame is not a whole TCP or UDP datagram in IPv4 (Linux's netfront
/// drops such a frame; so do we).
pub fn complete_checksum(frame: &mut [u8]) -> bool {
    if frame.get(12..14) != Some(&ETHERTYPE_IPV4[..]) {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER..]) else {
        return false;
    };
    if ip.more_frags() || ip.frag_offset() != 0 {
        return false;
    }
    let (src, dst): (IpAddress, IpAddress) = (ip.src_addr().into(), ip.dst_addr().into());
    let proto = ip.next_header();
    let l4 = ETHERNET_HEADER + usize::from(ip.header_len());
    let end = ETHERNET_HEADER + usize::from(ip.total_len());
    let Some(body) = frame.get_mut(l4..end) else {
        return false;
    };
    match proto {
        IpProtocol::Tcp => match TcpPacket::new_checked(body) {
            Ok(mut seg) => {
                seg.fill_checksum(&src, &dst);
                true
            }
            Err(_) => false,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(body) {
            Ok(mut dgram) => {
                dgram.fill_checksum(&src, &dst);
                true
            }
            Err(_) => false,
        },
        _ => false,
    }
}

/// How a frame we send crosses a link of IP MTU `mtu`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// It fits: as it is.
    Whole,
    /// A TCP/IPv4 segment too long for the link: with a GSO slot of this
    /// segment size (`gso.size`).
    Segmented(u16),
    /// Too long for the link and not TCP/IPv4 (or not even that much
    /// payload per segment): dropped.
    TooLong,
}

/// How to send `frame` over a link of IP MTU `mtu`.
pub fn crossing(frame: &[u8], mtu: usize) -> Crossing {
    if frame.len() <= mtu + ETHERNET_HEADER {
        return Crossing::Whole;
    }
    let Some(h) = tcp_v4(frame) else {
        return Crossing::TooLong;
    };
    let size = mtu.saturating_sub(h.ip_header + h.tcp_header);
    // Ethernet padding of a too-long frame is nonsense; a segment whose
    // headers alone fill the link cannot be cut.
    if h.end != frame.len() || size == 0 {
        return Crossing::TooLong;
    }
    Crossing::Segmented(size.min(usize::from(u16::MAX)) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    const A: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const B: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

    /// An Ethernet frame holding a TCP/IPv4 segment.
    fn frame(syn: bool, mss: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 80,
            dst_port: 4000,
            control: if syn {
                TcpControl::Syn
            } else {
                TcpControl::Psh
            },
            seq_number: TcpSeqNumber(7),
            ack_number: None,
            window_len: 1000,
            window_scale: syn.then_some(7),
            max_seg_size: mss,
            sack_permitted: syn,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: A,
            dst_addr: B,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut f = vec![0u8; ETHERNET_HEADER + ip.buffer_len() + tcp.buffer_len()];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
        let caps = ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(&mut f[ETHERNET_HEADER..]);
        ip.emit(&mut p, &caps);
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        tcp.emit(&mut t, &A.into(), &B.into(), &caps);
        f
    }

    /// The MSS option of `f`, and whether its checksum is right.
    fn mss_of(f: &[u8]) -> (Option<u16>, bool) {
        let ip = Ipv4Packet::new_checked(&f[ETHERNET_HEADER..]).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        let repr =
            TcpRepr::parse(&t, &A.into(), &B.into(), &ChecksumCapabilities::ignored()).unwrap();
        (repr.max_seg_size, t.verify_checksum(&A.into(), &B.into()))
    }

    #[test]
    fn a_blank_checksum_is_completed_and_other_frames_refused() {
        let good = frame(false, None, b"some payload bytes");
        let mut f = good.clone();
        // What a sender offloading the checksum leaves: anything.
        f[ETHERNET_HEADER + 20 + 16] ^= 0x5a;
        assert!(complete_checksum(&mut f));
        assert_eq!(f, good);
        // UDP too.
        let mut udp = good.clone();
        udp[ETHERNET_HEADER + 9] = 17;
        let len = (udp.len() - ETHERNET_HEADER - 20) as u16;
        udp[ETHERNET_HEADER + 24..ETHERNET_HEADER + 26].copy_from_slice(&len.to_be_bytes());
        let mut ip = Ipv4Packet::new_unchecked(&mut udp[ETHERNET_HEADER..]);
        ip.fill_checksum();
        assert!(complete_checksum(&mut udp));
        let d = smoltcp::wire::UdpPacket::new_checked(&udp[ETHERNET_HEADER + 20..]).unwrap();
        assert!(d.verify_checksum(&A.into(), &B.into()));
        // Not IPv4, not TCP or UDP, cut short, a fragment: refused.
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!complete_checksum(&mut arp));
        let mut icmp = good.clone();
        icmp[ETHERNET_HEADER + 9] = 1;
        assert!(!complete_checksum(&mut icmp));
        assert!(!complete_checksum(&mut good[..30].to_vec()));
        let mut frag = good.clone();
        frag[ETHERNET_HEADER + 6] |= 0x20;
        assert!(!complete_checksum(&mut frag));
    }

    #[test]
    fn a_received_syn_at_the_link_mss_is_raised() {
        let mut f = frame(true, Some(1460), &[]);
        assert!(raise_mss(&mut f, 1460));
        assert_eq!(mss_of(&f), (Some(BIG_MSS), true));
    }

    #[test]
    fn a_received_syn_below_the_link_mss_keeps_it() {
        let mut f = frame(true, Some(1400), &[]);
        let before = f.clone();
        assert!(!raise_mss(&mut f, 1460));
        assert_eq!(f, before);
    }

    #[test]
    fn a_received_syn_with_a_bad_checksum_is_left_for_smoltcp_to_drop() {
        let mut f = frame(true, Some(1460), &[]);
        let n = f.len();
        f[n - 1] ^= 1; // an option byte
        let before = f.clone();
        assert!(!raise_mss(&mut f, 1460));
        assert_eq!(f, before);
    }

    #[test]
    fn segments_without_syn_or_mss_are_left_alone() {
        for mut f in [frame(false, None, b"data"), frame(true, None, &[])] {
            let before = f.clone();
            assert!(!raise_mss(&mut f, 1460));
            assert!(!clamp_mss(&mut f, 1460));
            assert_eq!(f, before);
        }
    }

    #[test]
    fn a_sent_syn_is_clamped_to_the_link_mss() {
        let mut f = frame(true, Some(BIG_MSS), &[]);
        assert!(clamp_mss(&mut f, 1460));
        assert_eq!(mss_of(&f), (Some(1460), true));
        let mut small = frame(true, Some(1200), &[]);
        assert!(!clamp_mss(&mut small, 1460));
    }

    #[test]
    fn long_tcp_is_segmented_to_fit_the_link() {
        let f = frame(false, None, &[1u8; 5000]);
        // 20 bytes of IP header, 20 of TCP header, no options.
        assert_eq!(crossing(&f, 1500), Crossing::Segmented(1460));
        // Options come out of every segment's payload.
        let syn = frame(true, Some(1460), &[1u8; 5000]);
        assert_eq!(crossing(&syn, 1500), Crossing::Segmented(1460 - 12));
        assert_eq!(crossing(&f, 9000), Crossing::Whole);
        let mut udp = f.clone();
        udp[ETHERNET_HEADER + 9] = 17; // protocol: UDP
        assert_eq!(crossing(&udp, 1500), Crossing::TooLong);
        assert_eq!(crossing(&udp[..1514], 1500), Crossing::Whole);
    }

    #[test]
    fn a_link_too_small_for_the_headers_cannot_segment() {
        let f = frame(false, None, &[1u8; 100]);
        assert_eq!(crossing(&f, 40), Crossing::TooLong);
    }

    #[test]
    fn mss_option_parsing_is_bounded() {
        assert_eq!(mss_option(&[OPT_NOP, OPT_MSS, 4, 5, 0xb4]), Some(3));
        assert_eq!(mss_option(&[OPT_MSS, 4, 5]), None);
        assert_eq!(mss_option(&[OPT_MSS, 3, 5, 0xb4]), None);
        assert_eq!(mss_option(&[8, 0]), None);
        assert_eq!(mss_option(&[8, 10, 0, 0]), None);
        assert_eq!(mss_option(&[OPT_END, OPT_MSS, 4, 5, 0xb4]), None);
    }

    #[test]
    fn any_bytes_are_handled_without_panic() {
        // A tiny generator: the parses must reject or accept, never panic.
        let mut x: u32 = 0x1234_5678;
        let good = frame(true, Some(1460), b"xy");
        for round in 0..20_000 {
            let mut f = good.clone();
            let flips = 1 + round % 4;
            for _ in 0..flips {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = x as usize % f.len();
                f[at] = (x >> 8) as u8;
            }
            f.truncate(1 + (x as usize >> 16) % (f.len() + 1));
            let _ = raise_mss(&mut f, 1460);
            let _ = clamp_mss(&mut f, 1460);
            let _ = crossing(&f, 40);
        }
    }
}
