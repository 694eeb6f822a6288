//! Large TCP/IPv4 packets a frontend sent with a GSO extra-info slot
//! (`feature-gso-tcpv4`). dom0 cuts such a packet as it arrives ([`segment`],
//! what Linux does before a packet leaves for a device that cannot take it
//! whole), unless it goes to a port that takes it whole: dom0's own stack,
//! or a frontend that offered `feature-gso-tcpv4` with checksum offload,
//! which gets it with a GSO slot and its checksum left to it
//! ([`offload_to_frontend`]), as Linux's netback hands one on.

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket};

/// Ethernet header length.
const ETH: usize = 14;

/// The IPv4 header of `frame` if it is an unfragmented TCP/IPv4 packet in
/// Ethernet that fills the frame exactly (no padding).
fn whole_tcp_v4(frame: &[u8]) -> Option<Ipv4Packet<&[u8]>> {
    if frame.get(12..14) != Some(&[0x08, 0x00][..]) {
        return None;
    }
    let ip = Ipv4Packet::new_checked(&frame[ETH..]).ok()?;
    let whole = ip.next_header() == IpProtocol::Tcp
        && !ip.more_frags()
        && ip.frag_offset() == 0
        && ETH + usize::from(ip.total_len()) == frame.len();
    whole.then_some(ip)
}

/// Cut `frame`, a TCP segment in IPv4 in Ethernet, into frames carrying at
/// most `size` bytes of payload each, appended to `out`: IP length,
/// identification and checksum, TCP sequence number, flags (`FIN` and
/// `PSH` on the last only, `CWR` on the first only) and checksum adjusted
/// for each. Returns `false`, appending nothing, if `frame` is not an
/// unfragmented TCP/IPv4 packet filling the frame exactly, or `size` is 0.
pub fn segment(frame: &[u8], size: u16, out: &mut Vec<Vec<u8>>) -> bool {
    let size = usize::from(size);
    let Some(ip) = whole_tcp_v4(frame).filter(|_| size > 0) else {
        return false;
    };
    let ihl = usize::from(ip.header_len());
    let (src, dst): (IpAddress, IpAddress) = (ip.src_addr().into(), ip.dst_addr().into());
    let ident = ip.ident();
    let Ok(tcp) = TcpPacket::new_checked(&frame[ETH + ihl..]) else {
        return false;
    };
    let headers = ETH + ihl + usize::from(tcp.header_len());
    let (seq, fin, psh, cwr) = (tcp.seq_number(), tcp.fin(), tcp.psh(), tcp.cwr());
    let payload = &frame[headers..];
    let n = payload.len().div_ceil(size).max(1);
    for (k, chunk) in payload.chunks(size).enumerate() {
        let last = k + 1 == n;
        let mut f = Vec::with_capacity(headers + chunk.len());
        f.extend_from_slice(&frame[..headers]);
        f.extend_from_slice(chunk);
        let total = (f.len() - ETH) as u16;
        let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH..]);
        ip.set_total_len(total);
        ip.set_ident(ident.wrapping_add(k as u16));
        ip.fill_checksum();
        let mut tcp = TcpPacket::new_unchecked(&mut f[ETH + ihl..]);
        tcp.set_seq_number(seq + k * size);
        tcp.set_fin(fin && last);
        tcp.set_psh(psh && last);
        tcp.set_cwr(cwr && k == 0);
        tcp.fill_checksum(&src, &dst);
        out.push(f);
    }
    if payload.is_empty() {
        out.push(frame.to_vec());
    }
    true
}

/// Prepare `frame`, a large TCP segment in IPv4 in Ethernet, for a
/// frontend that takes such segments whole: its TCP checksum field gets
/// the pseudo-header's sum (the checksum left blank, as a Linux sender
/// offloading it leaves it: `NETRXF_csum_blank`). Returns the GSO size to
/// describe it with (what a link of IP MTU `mtu` carries per segment), or
/// `None`, leaving the frame alone, if it is no longer than the link's, is
/// not an unfragmented TCP/IPv4 packet filling the frame, or has a wrong
/// checksum: a frame a faulty link corrupted must reach the guest's stack
/// as it is, to be dropped there, not with a checksum the guest would
/// compute afresh over the damage.
pub fn offload_to_frontend(frame: &mut [u8], mtu: usize) -> Option<u16> {
    if frame.len() <= mtu + ETH {
        return None;
    }
    let ip = whole_tcp_v4(frame)?;
    let ihl = usize::from(ip.header_len());
    let (src, dst) = (ip.src_addr().octets(), ip.dst_addr().octets());
    let tcp = TcpPacket::new_checked(&frame[ETH + ihl..]).ok()?;
    let (a, b): (IpAddress, IpAddress) = (ip.src_addr().into(), ip.dst_addr().into());
    if !tcp.verify_checksum(&a, &b) {
        return None;
    }
    let size = mtu.checked_sub(ihl + usize::from(tcp.header_len()))?;
    let size = u16::try_from(size).ok().filter(|&s| s > 0)?;
    let len = frame.len() - ETH - ihl;
    // One's-complement sum of the pseudo-header, folded, not inverted.
    let mut sum: u32 = 0;
    for pair in src.chunks(2).chain(dst.chunks(2)) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    sum += 6 + len as u32;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let at = ETH + ihl + 16;
    frame[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    const A: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const B: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

    fn frame(control: TcpControl, payload: &[u8]) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 80,
            dst_port: 4000,
            control,
            seq_number: TcpSeqNumber(1000),
            ack_number: Some(TcpSeqNumber(5)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
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
        let mut f = vec![0u8; ETH + ip.buffer_len() + tcp.buffer_len()];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let caps = ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(&mut f[ETH..]);
        ip.emit(&mut p, &caps);
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        tcp.emit(&mut t, &A.into(), &B.into(), &caps);
        f
    }

    #[test]
    fn a_large_segment_for_a_frontend_gets_its_checksum_blanked() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let whole = frame(TcpControl::Psh, &data);
        let mut f = whole.clone();
        assert_eq!(offload_to_frontend(&mut f, 1500), Some(1460));
        // Only the checksum changed, and the frontend's fill gives it back.
        assert_eq!(f[..ETH + 36], whole[..ETH + 36]);
        assert_eq!(f[ETH + 38..], whole[ETH + 38..]);
        let mut t = TcpPacket::new_unchecked(&mut f[ETH + 20..]);
        assert!(!t.verify_checksum(&A.into(), &B.into()));
        t.fill_checksum(&A.into(), &B.into());
        assert_eq!(f, whole);
        // Link-sized, or corrupted: left alone.
        let mut small = frame(TcpControl::Psh, &data[..1000]);
        let copy = small.clone();
        assert_eq!(offload_to_frontend(&mut small, 1500), None);
        assert_eq!(small, copy);
        let mut bad = whole.clone();
        bad[3000] ^= 0x40;
        let copy = bad.clone();
        assert_eq!(offload_to_frontend(&mut bad, 1500), None);
        assert_eq!(bad, copy);
        assert_eq!(offload_to_frontend(&mut whole[..3000].to_vec(), 1500), None);
    }

    #[test]
    fn a_large_segment_is_cut_into_valid_frames_carrying_the_same_bytes() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        assert!(segment(&frame(TcpControl::Fin, &data), 1460, &mut out));
        assert_eq!(out.len(), 4);
        let mut joined = Vec::new();
        for (k, f) in out.iter().enumerate() {
            assert!(f.len() <= 1514);
            let ip = Ipv4Packet::new_checked(&f[ETH..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.total_len()) + ETH, f.len());
            let repr = Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()).unwrap();
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            let tcp = TcpRepr::parse(
                &t,
                &repr.src_addr.into(),
                &repr.dst_addr.into(),
                &ChecksumCapabilities::default(),
            )
            .unwrap();
            assert_eq!(tcp.seq_number, TcpSeqNumber(1000 + (k * 1460) as i32));
            assert_eq!(t.fin(), k == 3, "FIN only on the last");
            joined.extend_from_slice(tcp.payload);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn what_is_not_tcp_ipv4_or_has_no_size_is_refused() {
        let f = frame(TcpControl::Psh, &[7u8; 3000]);
        let mut out = Vec::new();
        assert!(!segment(&f, 0, &mut out));
        let mut udp = f.clone();
        udp[ETH + 9] = 17;
        assert!(!segment(&udp, 1460, &mut out));
        let mut padded = f.clone();
        padded.push(0);
        assert!(!segment(&padded, 1460, &mut out));
        assert!(!segment(&f[..100], 1460, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn a_short_segment_passes_whole() {
        let f = frame(TcpControl::Psh, b"hello");
        let mut out = Vec::new();
        assert!(segment(&f, 1460, &mut out));
        assert_eq!(out, vec![f]);
    }
}
