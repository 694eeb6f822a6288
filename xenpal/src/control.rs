//! The toolstack's requests to the guest, through xenstore's `control`
//! directory: `xl shutdown` writes `poweroff` into `control/shutdown`,
//! `xl reboot` writes `reboot`. The guest acknowledges a request by clearing
//! the node, then shuts itself down with the matching reason.
//! (`xl destroy` needs no guest: Xen ends the domain.)

use alloc::string::String;
use core::fmt;
use xen_pv::Hypervisor;
use xen_pv::abi::shutdown;
use xen_pv::xenstore::{TxId, XenStore, XsError};

/// The watch token for `control/shutdown`.
const TOKEN: &str = "xenpal-control-shutdown";

/// A request the toolstack wrote into `control/shutdown`.
#[doc(alias = "control/shutdown")]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ShutdownRequest {
    /// `poweroff` (`xl shutdown`), or `halt`.
    Poweroff,
    /// `reboot` (`xl reboot`).
    Reboot,
}

impl ShutdownRequest {
    /// The `SHUTDOWN_*` reason the guest gives Xen for this request.
    pub fn reason(self) -> u32 {
        match self {
            ShutdownRequest::Poweroff => shutdown::POWEROFF,
            ShutdownRequest::Reboot => shutdown::REBOOT,
        }
    }

    /// The request as the toolstack words it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownRequest::Poweroff => "poweroff",
            ShutdownRequest::Reboot => "reboot",
        }
    }

    /// The request a `control/shutdown` value names, if we honour it.
    pub fn parse(word: &str) -> Option<ShutdownRequest> {
        match word {
            "poweroff" | "halt" => Some(ShutdownRequest::Poweroff),
            "reboot" => Some(ShutdownRequest::Reboot),
            _ => None,
        }
    }
}

impl fmt::Display for ShutdownRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Advertise that we honour poweroff and reboot (`control/feature-poweroff`
/// and `control/feature-reboot`, where the toolstack lets us write them),
/// then wait for the toolstack to write a request into `control/shutdown`.
/// Each value written is acknowledged by clearing the node, as Linux does.
/// A request we do not honour (`suspend`, or any other word) is logged and
/// ignored; an empty value (our own acknowledgement, or the watch's first
/// firing) is skipped.
///
/// Errors: [`XsError`] if the watch cannot be set or xenstore breaks; a
/// missing node (`ENOENT`) is not an error, the wait goes on.
pub async fn shutdown_request<H: Hypervisor>(xs: &XenStore<H>) -> Result<ShutdownRequest, XsError> {
    for feature in ["control/feature-poweroff", "control/feature-reboot"] {
        // Best effort: a toolstack that did not make the node ours has not
        // asked for the advertisement.
        let _ = xs.write(TxId::NONE, feature, b"1").await;
    }
    xs.watch("control/shutdown", TOKEN).await?;
    loop {
        xs.next_watch_event_for(TOKEN).await?;
        let value: String = match xs.read_string(TxId::NONE, "control/shutdown").await {
            Ok(v) => v,
            Err(e) if e.is_enoent() => continue,
            Err(e) => return Err(e),
        };
        let word = value.trim_end_matches('\0');
        if word.is_empty() {
            continue;
        }
        if let Err(e) = xs.write(TxId::NONE, "control/shutdown", b"").await {
            log::warn!("xenpal: acknowledging control/shutdown: {e}");
        }
        match ShutdownRequest::parse(word) {
            Some(req) => return Ok(req),
            None => log::warn!("xenpal: control/shutdown: {word:?} is not supported, ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ShutdownRequest;

    #[test]
    fn words() {
        assert_eq!(
            ShutdownRequest::parse("poweroff"),
            Some(ShutdownRequest::Poweroff)
        );
        assert_eq!(
            ShutdownRequest::parse("halt"),
            Some(ShutdownRequest::Poweroff)
        );
        assert_eq!(
            ShutdownRequest::parse("reboot"),
            Some(ShutdownRequest::Reboot)
        );
        assert_eq!(ShutdownRequest::parse("suspend"), None);
        assert_eq!(ShutdownRequest::parse(""), None);
        assert_eq!(
            ShutdownRequest::Reboot.reason(),
            xen_pv::abi::shutdown::REBOOT
        );
    }
}
