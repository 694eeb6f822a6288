//! The static-site unikernel (`xenpal_apps::site`) as a Xen guest: it
//! serves the FAT disks it is given over HTTP on vif 0, at the address its
//! `xl` config gives the vif (`ip=`), until it is shut down. The QEMU rig
//! runs it as a domU of a Linux dom0 and reaches it from the host:
//! `cargo xtask qemu --arch aarch64|x86_64 --xen 4.17 --dom0 linux --site DIR site`.

#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::string::ToString;
use xenpal_apps::site::{self, SiteConfig};

#[xenpal::main]
async fn main(p: xenpal::Platform) -> Result<(), site::SiteError> {
    let address = xenpal::net::vif_address(&p, "0")
        .await
        .map_err(|e| site::SiteError::Net(e.to_string()))?;
    let config = SiteConfig {
        address,
        // The host's side (QEMU's user network) is on the same subnet.
        gateway: None,
        ..SiteConfig::default()
    };
    let stats = site::run(&p, config).await?;
    xenpal::log::info!("site: served {} responses", stats.responses);
    Ok(())
}
