//! Grant tables: letting another domain map or copy one's pages, and mapping or
//! copying pages others granted.

use crate::event::DomId;
use crate::mem::{Gfn, SharedMemory};
use core::fmt;

/// A grant reference: an index into the granting domain's grant table.
#[doc(alias = "grant_ref_t")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(pub u32);

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gref {}", self.0)
    }
}

/// Whether the peer may write a granted page.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// The peer may only read (Xen: `GTF_readonly`, `GNTMAP_readonly`).
    ReadOnly,
    /// The peer may read and write.
    ReadWrite,
}

/// Why a grant operation failed. Each method of [`GrantTable`] lists the
/// errors it may return. Xen's `GNTST_*` codes map one to one where one
/// exists.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// The grant table is full and cannot grow.
    NoFreeRefs,
    /// The reference is out of range or does not name an active grant
    /// (`GNTST_bad_gntref`).
    BadRef,
    /// The peer still has the page mapped or a copy in flight; ending access
    /// now would let it keep using the page. The grant stays valid: retry
    /// later.
    InUse,
    /// The domain does not exist or may not be named here
    /// (`GNTST_bad_domain`).
    BadDomain,
    /// The grant does not permit this access to this domain: wrong domain,
    /// write access to a read-only grant (`GNTST_permission_denied`).
    PermissionDenied,
    /// The mapping handle is not valid (`GNTST_bad_handle`).
    BadHandle,
    /// A copy's offset and length cross a page boundary
    /// (`GNTST_bad_copy_arg`).
    BadCopyArg,
    /// A local frame named in the operation is not valid (`GNTST_bad_page`).
    BadPage,
    /// The address to map at is not valid (`GNTST_bad_virt_addr`).
    BadAddress,
    /// No room for another mapping (`GNTST_no_space`,
    /// `GNTST_no_device_space`).
    NoSpace,
    /// Transient failure: retry (`GNTST_eagain`).
    Again,
    /// Xen's general error (`GNTST_general_error`).
    General,
    /// The hypercall itself failed with this negative Xen errno.
    Hypervisor(i32),
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            GrantError::NoFreeRefs => "grant table full",
            GrantError::BadRef => "bad grant reference",
            GrantError::InUse => "grant still in use by the peer",
            GrantError::BadDomain => "bad domain",
            GrantError::PermissionDenied => "grant permission denied",
            GrantError::BadHandle => "bad grant handle",
            GrantError::BadCopyArg => "grant copy crosses a page boundary",
            GrantError::BadPage => "bad page",
            GrantError::BadAddress => "bad address",
            GrantError::NoSpace => "no space for another mapping",
            GrantError::Again => "try again",
            GrantError::General => "general grant error",
            GrantError::Hypervisor(e) => return write!(f, "hypervisor error {e}"),
        };
        f.write_str(s)
    }
}

impl core::error::Error for GrantError {}

/// One end of a grant copy.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CopyPtr {
    /// A page another domain granted us.
    Foreign {
        /// The granting domain.
        domid: DomId,
        /// Its grant reference.
        gref: GrantRef,
        /// Byte offset in the page.
        offset: u16,
    },
    /// One of our own frames.
    Local {
        /// The frame.
        gfn: Gfn,
        /// Byte offset in the page.
        offset: u16,
    },
}

/// One grant-copy operation: `len` bytes from `src` to `dst`, neither
/// crossing a page boundary.
#[doc(alias = "gnttab_copy")]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GrantCopy {
    /// Where to copy from.
    pub src: CopyPtr,
    /// Where to copy to.
    pub dst: CopyPtr,
    /// Number of bytes.
    pub len: u16,
}

/// The running domain's grant table, and its use of other domains' grants.
///
/// Implementations are single-vCPU and not `Sync`; call from task context.
pub trait GrantTable {
    /// A page of another domain mapped into ours; unmapped with
    /// [`unmap`](Self::unmap).
    type Mapping: SharedMemory;

    /// Let domain `domid` map or copy our frame `gfn`.
    ///
    /// Errors: [`GrantError::NoFreeRefs`].
    #[doc(alias = "gnttab_grant_foreign_access")]
    fn grant_access(&self, domid: DomId, gfn: Gfn, access: Access) -> Result<GrantRef, GrantError>;

    /// Revoke a grant made with [`grant_access`](Self::grant_access) and free
    /// the reference.
    ///
    /// Errors: [`GrantError::InUse`] while the peer still maps the page or
    /// copies to or from it (the grant stays in force; retry later);
    /// [`GrantError::BadRef`] if `gref` is not an active grant of ours.
    #[doc(alias = "gnttab_end_foreign_access")]
    fn end_access(&self, gref: GrantRef) -> Result<(), GrantError>;

    /// Whether the peer currently maps (or copies) the granted page.
    ///
    /// Errors: [`GrantError::BadRef`].
    fn in_use(&self, gref: GrantRef) -> Result<bool, GrantError>;

    /// Map page `gref` granted by domain `domid`.
    ///
    /// Errors: [`GrantError::BadDomain`]; [`GrantError::BadRef`];
    /// [`GrantError::PermissionDenied`] if the grant is not to us or is
    /// read-only and `access` is [`Access::ReadWrite`];
    /// [`GrantError::NoSpace`] if no more pages can be mapped.
    #[doc(alias = "GNTTABOP_map_grant_ref")]
    fn map(
        &self,
        domid: DomId,
        gref: GrantRef,
        access: Access,
    ) -> Result<Self::Mapping, GrantError>;

    /// Unmap a page mapped with [`map`](Self::map). On error the mapping is
    /// handed back untouched.
    ///
    /// Errors: [`GrantError::BadHandle`].
    #[doc(alias = "GNTTABOP_unmap_grant_ref")]
    fn unmap(&self, mapping: Self::Mapping) -> Result<(), (Self::Mapping, GrantError)>;

    /// Perform grant copies, writing each one's outcome to the matching
    /// element of `status` (which must be as long as `ops`, else
    /// [`GrantError::General`] and nothing is copied).
    ///
    /// Errors (per operation): [`GrantError::BadDomain`],
    /// [`GrantError::BadRef`], [`GrantError::PermissionDenied`] (writing into
    /// a read-only grant), [`GrantError::BadCopyArg`], [`GrantError::BadPage`].
    /// The method's own result fails only if the hypercall did.
    #[doc(alias = "GNTTABOP_copy")]
    fn copy(
        &self,
        ops: &[GrantCopy],
        status: &mut [Result<(), GrantError>],
    ) -> Result<(), GrantError>;

    /// Number of grants made with [`grant_access`](Self::grant_access) and not
    /// yet ended. Tests use it to check that nothing leaks.
    fn active_grants(&self) -> usize;

    /// Number of foreign pages currently mapped with [`map`](Self::map).
    fn active_mappings(&self) -> usize;
}
