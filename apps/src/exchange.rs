//! Two guests meet through xenstore, share a page through a grant, and
//! signal each other through an event channel — the three mechanisms every
//! PV device is built from.
//!
//! The *offerer* grants a page holding a message and publishes the grant
//! reference and an unbound event-channel port in xenstore. The *answerer*
//! watches for them, binds the port, maps the page, reads the message, writes
//! a reply and notifies. Each guest learns its peer's domain id from its own
//! `data/peer` node, which the toolstack writes.

use alloc::format;
use alloc::string::String;
use core::fmt;
use hal::event::wait_event;
use hal::mem::{PageAlloc, Pages};
use hal::{Access, Console, DomId, EventChannel, EventPort, GrantRef, GrantTable, SharedMemory};
use xen_pv::xenstore::{Perm, PermAccess, TxId, XenStore, XsError};
use xenpal::{Hypervisor, Platform};

/// Why the exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// A xenstore request failed.
    Xenstore(XsError),
    /// An event-channel operation failed.
    Event(hal::EventError),
    /// A grant operation failed.
    Grant(hal::GrantError),
    /// Allocating the page failed.
    Alloc(hal::AllocError),
    /// A value in xenstore was malformed (which one).
    Malformed(&'static str),
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Xenstore(e) => write!(f, "xenstore: {e}"),
            ExchangeError::Event(e) => write!(f, "event channel: {e}"),
            ExchangeError::Grant(e) => write!(f, "grant: {e}"),
            ExchangeError::Alloc(e) => write!(f, "page allocation: {e}"),
            ExchangeError::Malformed(what) => write!(f, "malformed xenstore value: {what}"),
        }
    }
}

impl From<XsError> for ExchangeError {
    fn from(e: XsError) -> Self {
        ExchangeError::Xenstore(e)
    }
}
impl From<hal::EventError> for ExchangeError {
    fn from(e: hal::EventError) -> Self {
        ExchangeError::Event(e)
    }
}
impl From<hal::GrantError> for ExchangeError {
    fn from(e: hal::GrantError) -> Self {
        ExchangeError::Grant(e)
    }
}
impl From<hal::AllocError> for ExchangeError {
    fn from(e: hal::AllocError) -> Self {
        ExchangeError::Alloc(e)
    }
}

/// Print a line on the guest's console (never blocks; drops on overflow).
pub fn say(p: &Platform, args: fmt::Arguments<'_>) {
    let mut line = String::new();
    let _ = fmt::write(&mut line, args);
    line.push('\n');
    p.console().write_lossy(line.as_bytes());
}

async fn peer(xs: &XenStore<Hypervisor>) -> Result<DomId, ExchangeError> {
    let id = xs.read_u64(TxId::NONE, "data/peer").await?;
    u16::try_from(id)
        .map(DomId)
        .map_err(|_| ExchangeError::Malformed("data/peer"))
}

/// The offering side. Returns the reply the peer wrote into the page.
pub async fn offerer(p: &Platform, xs: &XenStore<Hypervisor>) -> Result<String, ExchangeError> {
    let me = xs.read_u64(TxId::NONE, "domid").await?;
    let peer = peer(xs).await?;
    let page = p.pages().alloc(1)?;
    let msg = format!("hello from d{me}");
    page.write(0, msg.as_bytes());
    let gref = p
        .grants()
        .grant_access(peer, page.gfn(0), Access::ReadWrite)?;
    let port = p.events().alloc_unbound(peer)?;
    say(
        p,
        format_args!(
            "wrote {msg:?} into frame {:#x}, granted it to {peer} as {gref}; offering {port}",
            page.gfn(0).0
        ),
    );

    // Publish both in one transaction, readable by the peer only.
    let owner = DomId(me as u16);
    loop {
        let tx = xs.transaction_start().await?;
        xs.write(tx, "data/exchange", b"").await?;
        let perms = [
            Perm {
                domid: owner,
                access: PermAccess::None,
            },
            Perm {
                domid: peer,
                access: PermAccess::Read,
            },
        ];
        xs.set_perms(tx, "data/exchange", &perms).await?;
        xs.write(tx, "data/exchange/gref", format!("{}", gref.0).as_bytes())
            .await?;
        xs.write(tx, "data/exchange/port", format!("{}", port.0).as_bytes())
            .await?;
        match xs.transaction_end(tx, true).await {
            Ok(()) => break,
            Err(XsError::Errno(e)) if e == xen_pv::abi::Errno::EAGAIN => continue,
            Err(e) => return Err(e.into()),
        }
    }
    say(
        p,
        format_args!("published data/exchange in xenstore; waiting for an event on {port}"),
    );

    wait_event(p.events(), port).await;
    let mut buf = [0u8; 64];
    page.read(0, &mut buf);
    let reply = String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(64)])
        .into_owned();
    say(
        p,
        format_args!("event on {port}: the page now says {reply:?}"),
    );

    p.grants().end_access(gref)?;
    p.events().close(port)?;
    p.pages().free(page);
    say(
        p,
        format_args!(
            "ended the grant and closed the port; grants active: {}",
            p.grants().active_grants()
        ),
    );
    Ok(reply)
}

/// The answering side. Returns the message it found in the page.
pub async fn answerer(p: &Platform, xs: &XenStore<Hypervisor>) -> Result<String, ExchangeError> {
    let me = xs.read_u64(TxId::NONE, "domid").await?;
    let peer = peer(xs).await?;
    let dir = format!("/local/domain/{}/data/exchange", peer.0);
    xs.watch(&format!("{dir}/port"), "offer").await?;
    say(p, format_args!("watching {dir}/port"));
    let (gref, remote) = loop {
        let ev = xs.next_watch_event().await?;
        let read = async {
            let gref = xs.read_u64(TxId::NONE, &format!("{dir}/gref")).await?;
            let port = xs.read_u64(TxId::NONE, &format!("{dir}/port")).await?;
            Ok::<_, XsError>((gref, port))
        };
        match read.await {
            Ok((g, p)) => {
                let g = u32::try_from(g).map_err(|_| ExchangeError::Malformed("gref"))?;
                let p = u32::try_from(p).map_err(|_| ExchangeError::Malformed("port"))?;
                break (GrantRef(g), EventPort(p));
            }
            // Not there yet (the first watch event fires at once).
            Err(e) if e.is_enoent() || e == XsError::Errno(xen_pv::abi::Errno::EACCES) => {
                let _ = ev;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    };
    xs.unwatch(&format!("{dir}/port"), "offer").await?;
    say(
        p,
        format_args!("found {gref} and {remote} of {peer} in xenstore"),
    );

    let port = p.events().bind_interdomain(peer, remote)?;
    let page = p.grants().map(peer, gref, Access::ReadWrite)?;
    let mut buf = [0u8; 64];
    page.read(0, &mut buf);
    let msg = String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(64)])
        .into_owned();
    say(p, format_args!("mapped {gref} of {peer}: it says {msg:?}"));
    let reply = format!("hello back from d{me}");
    page.fill(0, 64, 0);
    page.write(0, reply.as_bytes());
    p.grants().unmap(page).map_err(|(_, e)| e)?;
    p.events().notify(port)?;
    say(
        p,
        format_args!("wrote {reply:?}, unmapped the page, notified {port}"),
    );
    p.events().close(port)?;
    Ok(msg)
}
