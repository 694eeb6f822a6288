//! xenbus: the device-state protocol of `io/xenbus.h`, on top of xenstore.
//!
//! A split device has a frontend directory (`device/<class>/<id>` under the
//! guest's home) and a backend directory (named by the frontend's `backend`
//! node). Each side publishes its `state`; the frontend state machine itself
//! lives in `xenpal-drivers`.

use crate::abi::io::xenbus_state as raw;
use crate::hypercall::Hypervisor;
use crate::xenstore::{TxId, XenStore, XsError};
use alloc::string::String;
use core::fmt;

/// A xenbus device state (`enum xenbus_state`).
#[doc(alias = "xenbus_state")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum XenbusState {
    /// Not yet known (`XenbusStateUnknown`).
    Unknown,
    /// Setting up (`XenbusStateInitialising`).
    Initialising,
    /// Waiting for the peer's details (`XenbusStateInitWait`; backends).
    InitWait,
    /// Details published, waiting to connect (`XenbusStateInitialised`).
    Initialised,
    /// Running (`XenbusStateConnected`).
    Connected,
    /// Shutting down (`XenbusStateClosing`).
    Closing,
    /// Shut down (`XenbusStateClosed`).
    Closed,
    /// Reconfiguring (`XenbusStateReconfiguring`).
    Reconfiguring,
    /// Reconfigured (`XenbusStateReconfigured`).
    Reconfigured,
}

impl XenbusState {
    /// From the numeric value stored in xenstore; `None` if out of range.
    pub fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            raw::UNKNOWN => XenbusState::Unknown,
            raw::INITIALISING => XenbusState::Initialising,
            raw::INIT_WAIT => XenbusState::InitWait,
            raw::INITIALISED => XenbusState::Initialised,
            raw::CONNECTED => XenbusState::Connected,
            raw::CLOSING => XenbusState::Closing,
            raw::CLOSED => XenbusState::Closed,
            raw::RECONFIGURING => XenbusState::Reconfiguring,
            raw::RECONFIGURED => XenbusState::Reconfigured,
            _ => return None,
        })
    }

    /// The numeric value stored in xenstore.
    pub fn to_raw(self) -> u32 {
        match self {
            XenbusState::Unknown => raw::UNKNOWN,
            XenbusState::Initialising => raw::INITIALISING,
            XenbusState::InitWait => raw::INIT_WAIT,
            XenbusState::Initialised => raw::INITIALISED,
            XenbusState::Connected => raw::CONNECTED,
            XenbusState::Closing => raw::CLOSING,
            XenbusState::Closed => raw::CLOSED,
            XenbusState::Reconfiguring => raw::RECONFIGURING,
            XenbusState::Reconfigured => raw::RECONFIGURED,
        }
    }
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Read `<dir>/state`. A missing node reads as [`XenbusState::Unknown`] (the
/// peer is gone or not yet there); an unparsable value is `EINVAL`.
///
/// Errors: as [`XenStore::read`], except `ENOENT`.
pub async fn read_state<H: Hypervisor>(
    xs: &XenStore<H>,
    dir: &str,
) -> Result<XenbusState, XsError> {
    let path = join(dir, "state");
    match xs.read_u64(TxId::NONE, &path).await {
        Ok(v) => u32::try_from(v)
            .ok()
            .and_then(XenbusState::from_raw)
            .ok_or(XsError::Errno(crate::abi::Errno::EINVAL)),
        Err(e) if e.is_enoent() => Ok(XenbusState::Unknown),
        Err(e) => Err(e),
    }
}

/// Write `<dir>/state`.
///
/// Errors: as [`XenStore::write`].
pub async fn write_state<H: Hypervisor>(
    xs: &XenStore<H>,
    tx: TxId,
    dir: &str,
    state: XenbusState,
) -> Result<(), XsError> {
    let path = join(dir, "state");
    let mut v = String::new();
    let _ = fmt::Write::write_fmt(&mut v, format_args!("{}", state.to_raw()));
    xs.write(tx, &path, v.as_bytes()).await
}

/// `dir` + `/` + `name`.
pub fn join(dir: &str, name: &str) -> String {
    let mut s = String::with_capacity(dir.len() + 1 + name.len());
    s.push_str(dir.trim_end_matches('/'));
    s.push('/');
    s.push_str(name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for v in 0..=8 {
            assert_eq!(XenbusState::from_raw(v).unwrap().to_raw(), v);
        }
        assert!(XenbusState::from_raw(9).is_none());
        assert_eq!(join("device/vif/0/", "state"), "device/vif/0/state");
    }
}
