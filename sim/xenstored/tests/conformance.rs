//! Conformance tables: requests, in order, against one xenstored, each with
//! the reply Xen's C xenstored (4.21) gives; and the watch events each
//! domain has received at chosen points.
//!
//! Rows read `r!(domain, TYPE, tx, "payload" => REPLY_TYPE, "reply")`, with
//! NULs written `\0`; `ev!(domain, [(path, token), ...])` drains the watch
//! events queued for a (ring-less) domain and compares them.

use xenpal_xenstored::{Config, DomId, Xenstored};

/// Message types, plus ones the abi module does not name.
mod t {
    pub use xenpal_xen_pv::abi::io::xs::*;
    /// Removed from the protocol; the number is invalid.
    pub const RESTRICT: u32 = 20;
}

#[derive(Debug)]
enum Step {
    Req {
        dom: u16,
        ty: u32,
        tx: u32,
        req: &'static str,
        want_ty: u32,
        want: &'static str,
    },
    Events {
        dom: u16,
        want: &'static [(&'static str, &'static str)],
    },
}

macro_rules! r {
    ($dom:expr, $ty:ident, $tx:expr, $req:expr => $wty:ident, $want:expr) => {
        Step::Req {
            dom: $dom,
            ty: t::$ty,
            tx: $tx,
            req: $req,
            want_ty: t::$wty,
            want: $want,
        }
    };
}

macro_rules! ev {
    ($dom:expr, [$(($p:expr, $t:expr)),* $(,)?]) => {
        Step::Events { dom: $dom, want: &[$(($p, $t)),*] }
    };
}

fn type_name(t: u32) -> String {
    let names = [
        "CONTROL",
        "DIRECTORY",
        "READ",
        "GET_PERMS",
        "WATCH",
        "UNWATCH",
        "TRANSACTION_START",
        "TRANSACTION_END",
        "INTRODUCE",
        "RELEASE",
        "GET_DOMAIN_PATH",
        "WRITE",
        "MKDIR",
        "RM",
        "SET_PERMS",
        "WATCH_EVENT",
        "ERROR",
        "IS_DOMAIN_INTRODUCED",
        "RESUME",
        "SET_TARGET",
        "RESTRICT",
        "RESET_WATCHES",
        "DIRECTORY_PART",
    ];
    names
        .get(t as usize)
        .map_or_else(|| format!("type {t}"), |n| (*n).to_owned())
}

fn show(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

/// Run `steps` in order against `xs`; panic naming the first row that
/// differs.
fn run(xs: &mut Xenstored, steps: &[Step]) {
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Req {
                dom,
                ty,
                tx,
                req,
                want_ty,
                want,
            } => {
                let got = xs.request(DomId(*dom), *ty, *tx, req.as_bytes());
                if got.type_ != *want_ty || got.payload != want.as_bytes() {
                    panic!(
                        "row {i}: d{dom} {} tx {tx} {}\n  expected {} {}\n  got      {} {}",
                        type_name(*ty),
                        show(req.as_bytes()),
                        type_name(*want_ty),
                        show(want.as_bytes()),
                        type_name(got.type_),
                        show(&got.payload),
                    );
                }
            }
            Step::Events { dom, want } => {
                let got = xs.take_watch_events(DomId(*dom));
                let want: Vec<(String, String)> = want
                    .iter()
                    .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
                    .collect();
                assert_eq!(got, want, "row {i}: watch events of d{dom}");
            }
        }
    }
}

#[test]
fn conformance_default_quotas() {
    let steps = [
        // --- The initial tree, as dom0 -------------------------------------
        r!(0, READ, 0, "/\0" => READ, ""),
        r!(0, DIRECTORY, 0, "/\0" => DIRECTORY, "local\0tool\0"),
        r!(0, DIRECTORY, 0, "/local\0" => DIRECTORY, "domain\0"),
        r!(0, GET_PERMS, 0, "/tool\0" => GET_PERMS, "n0\0"),
        r!(0, READ, 0, "/nope\0" => ERROR, "ENOENT\0"),
        // --- Basics: write creates parents, mkdir, rm -----------------------
        r!(0, WRITE, 0, "/local/domain/1/name\0vm1" => WRITE, "OK\0"),
        r!(0, READ, 0, "/local/domain/1/name\0" => READ, "vm1"),
        r!(0, READ, 0, "/local/domain/1\0" => READ, ""),
        r!(0, DIRECTORY, 0, "/local/domain\0" => DIRECTORY, "1\0"),
        r!(0, MKDIR, 0, "/local/domain/1/name\0" => MKDIR, "OK\0"),
        r!(0, READ, 0, "/local/domain/1/name\0" => READ, "vm1"),
        r!(0, WRITE, 0, "/local/domain/1/bin\0a\0b" => WRITE, "OK\0"),
        r!(0, READ, 0, "/local/domain/1/bin\0" => READ, "a\0b"),
        r!(0, RM, 0, "/local/domain/1/bin\0" => RM, "OK\0"),
        // Removing a missing node is fine if its parent exists.
        r!(0, RM, 0, "/local/domain/1/bin\0" => RM, "OK\0"),
        r!(0, RM, 0, "/local/domain/1/no/such\0" => ERROR, "ENOENT\0"),
        r!(0, RM, 0, "/\0" => ERROR, "EINVAL\0"),
        r!(0, SET_PERMS, 0, "/local/domain/1\0n0\0r1\0" => SET_PERMS, "OK\0"),
        r!(0, GET_PERMS, 0, "/local/domain/1\0" => GET_PERMS, "n0\0r1\0"),
        r!(0, MKDIR, 0, "/local/domain/1/data\0" => MKDIR, "OK\0"),
        // New nodes inherit their parent's permissions.
        r!(0, GET_PERMS, 0, "/local/domain/1/data\0" => GET_PERMS, "n0\0r1\0"),
        r!(0, SET_PERMS, 0, "/local/domain/1/data\0n1\0" => SET_PERMS, "OK\0"),
        // --- Domain 1: relative paths, reader of its home, owner of data -----
        // `name` was created (n0) before the home was opened to dom1.
        r!(1, READ, 0, "name\0" => ERROR, "EACCES\0"),
        r!(1, DIRECTORY, 0, "/local/domain/1\0" => DIRECTORY, "name\0data\0"),
        r!(1, READ, 0, "nothing\0" => ERROR, "ENOENT\0"),
        // Under an unreadable parent, a missing node is EACCES, not ENOENT.
        r!(1, READ, 0, "/local/domain/2/x\0" => ERROR, "EACCES\0"),
        r!(1, READ, 0, "/local/domain\0" => ERROR, "EACCES\0"),
        r!(1, WRITE, 0, "foo\0bar" => ERROR, "EACCES\0"),
        r!(1, WRITE, 0, "data/x\0hello" => WRITE, "OK\0"),
        r!(1, READ, 0, "data/x\0" => READ, "hello"),
        // An unprivileged creator owns what it creates.
        r!(1, GET_PERMS, 0, "data/x\0" => GET_PERMS, "n1\0"),
        r!(1, MKDIR, 0, "data/d1/d2\0" => MKDIR, "OK\0"),
        r!(1, DIRECTORY, 0, "data\0" => DIRECTORY, "x\0d1\0"),
        r!(1, RM, 0, "data/d1\0" => RM, "OK\0"),
        r!(1, DIRECTORY, 0, "data\0" => DIRECTORY, "x\0"),
        r!(1, RM, 0, "data/gone\0" => RM, "OK\0"),
        r!(1, RM, 0, "data/no/such\0" => ERROR, "ENOENT\0"),
        r!(1, RM, 0, "name\0" => ERROR, "EACCES\0"),
        r!(1, RM, 0, "/\0" => ERROR, "EACCES\0"),
        // --- Permissions: other domains, SET_PERMS ---------------------------
        r!(2, READ, 0, "/local/domain/1/data/x\0" => ERROR, "EACCES\0"),
        r!(1, SET_PERMS, 0, "data/x\0n1\0r2\0" => SET_PERMS, "OK\0"),
        r!(2, READ, 0, "/local/domain/1/data/x\0" => READ, "hello"),
        r!(2, WRITE, 0, "/local/domain/1/data/x\0evil" => ERROR, "EACCES\0"),
        // Only the owner may set permissions ...
        r!(2, SET_PERMS, 0, "/local/domain/1/data/x\0n2\0" => ERROR, "EACCES\0"),
        // ... and only dom0 may change the owner.
        r!(1, SET_PERMS, 0, "data/x\0n2\0" => ERROR, "EPERM\0"),
        r!(1, SET_PERMS, 0, "data/x\0q1\0" => ERROR, "EINVAL\0"),
        r!(1, SET_PERMS, 0, "data/x\0" => ERROR, "EINVAL\0"),
        r!(0, SET_PERMS, 0, "/local/domain/1/data/x\0b2\0" => SET_PERMS, "OK\0"),
        // b2: owner 2, default access for everyone else: both.
        r!(1, READ, 0, "data/x\0" => READ, "hello"),
        r!(0, SET_PERMS, 0, "/local/domain/1/data/x\0n1\0r2\0" => SET_PERMS, "OK\0"),
        r!(2, READ, 0, "/local/domain/1/data/nope\0" => ERROR, "EACCES\0"),
        // --- Special nodes and path syntax -----------------------------------
        r!(0, GET_PERMS, 0, "@releaseDomain\0" => GET_PERMS, "n0\0"),
        r!(1, GET_PERMS, 0, "@releaseDomain\0" => ERROR, "EACCES\0"),
        r!(0, READ, 0, "@releaseDomain\0" => ERROR, "EINVAL\0"),
        r!(1, READ, 0, "data/a b\0" => ERROR, "EINVAL\0"),
        r!(1, READ, 0, "data//x\0" => ERROR, "EINVAL\0"),
        r!(1, READ, 0, "data/\0" => ERROR, "EINVAL\0"),
        r!(1, READ, 0, "\0" => ERROR, "EINVAL\0"),
        r!(1, READ, 0, "data/x" => ERROR, "EINVAL\0"),
        r!(1, READ, 0, "data/x\0\0" => ERROR, "EINVAL\0"),
        r!(1, RESTRICT, 0, "\0" => ERROR, "ENOSYS\0"),
        r!(1, WATCH_EVENT, 0, "\0" => ERROR, "ENOSYS\0"),
        r!(1, GET_DOMAIN_PATH, 0, "7\0" => GET_DOMAIN_PATH, "/local/domain/7\0"),
        r!(1, GET_DOMAIN_PATH, 0, "" => ERROR, "EINVAL\0"),
        // --- Domain management is dom0's -------------------------------------
        r!(1, INTRODUCE, 0, concat!("1\0", "1234\0", "5\0") => ERROR, "EACCES\0"),
        r!(1, IS_DOMAIN_INTRODUCED, 0, "1\0" => ERROR, "EACCES\0"),
        r!(1, RELEASE, 0, "1\0" => ERROR, "EACCES\0"),
        r!(0, IS_DOMAIN_INTRODUCED, 0, "1\0" => IS_DOMAIN_INTRODUCED, "F\0"),
        r!(0, WATCH, 0, "@introduceDomain\0intro\0" => WATCH, "OK\0"),
        ev!(0, [("@introduceDomain", "intro")]),
        r!(0, INTRODUCE, 0, concat!("1\0", "1234\0", "5\0") => INTRODUCE, "OK\0"),
        ev!(0, [("@introduceDomain", "intro")]),
        r!(0, IS_DOMAIN_INTRODUCED, 0, "1\0" => IS_DOMAIN_INTRODUCED, "T\0"),
        r!(0, INTRODUCE, 0, concat!("1\0", "1234\0", "5\0") => INTRODUCE, "OK\0"),
        ev!(0, []),
        r!(0, INTRODUCE, 0, concat!("2\0", "1234\0", "0\0") => ERROR, "EINVAL\0"),
        r!(0, INTRODUCE, 0, concat!("2\0", "1234\0") => ERROR, "EINVAL\0"),
        // --- Watches ----------------------------------------------------------
        r!(1, WATCH, 0, "data\0tok\0" => WATCH, "OK\0"),
        ev!(1, [("data", "tok")]),
        r!(1, WATCH, 0, "data\0tok\0" => ERROR, "EEXIST\0"),
        r!(1, WATCH, 0, "data\0tok2\0" => WATCH, "OK\0"),
        r!(1, WATCH, 0, "data\0" => ERROR, "EINVAL\0"),
        r!(1, WATCH, 0, "data/\0t\0" => ERROR, "EINVAL\0"),
        ev!(1, [("data", "tok2")]),
        r!(0, WRITE, 0, "/local/domain/1/data/x\0v2" => WRITE, "OK\0"),
        ev!(1, [("data/x", "tok"), ("data/x", "tok2")]),
        ev!(0, []),
        // The first event fires whatever the permissions.
        r!(2, WATCH, 0, "/local/domain/1/data\0t2\0" => WATCH, "OK\0"),
        ev!(2, [("/local/domain/1/data", "t2")]),
        // y inherits n1 from data: dom2 can read neither, so hears nothing.
        r!(1, WRITE, 0, "data/y\0v" => WRITE, "OK\0"),
        ev!(1, [("data/y", "tok"), ("data/y", "tok2")]),
        ev!(2, []),
        // x grants dom2 read access: dom2 hears of it.
        r!(1, WRITE, 0, "data/x\0v3" => WRITE, "OK\0"),
        ev!(2, [("/local/domain/1/data/x", "t2")]),
        ev!(1, [("data/x", "tok"), ("data/x", "tok2")]),
        r!(1, UNWATCH, 0, "data\0tok2\0" => UNWATCH, "OK\0"),
        r!(1, UNWATCH, 0, "data\0tok2\0" => ERROR, "ENOENT\0"),
        r!(1, WATCH, 0, "data/x\0xw\0" => WATCH, "OK\0"),
        ev!(1, [("data/x", "xw")]),
        // Losing read access is still reported (old permissions count).
        r!(1, SET_PERMS, 0, "data/x\0n1\0" => SET_PERMS, "OK\0"),
        ev!(1, [("data/x", "tok"), ("data/x", "xw")]),
        ev!(2, [("/local/domain/1/data/x", "t2")]),
        r!(1, WRITE, 0, "data/x\0v4" => WRITE, "OK\0"),
        ev!(2, []),
        ev!(1, [("data/x", "tok"), ("data/x", "xw")]),
        // Removing an ancestor fires watches on the nodes below (exact
        // match, children first), then on the removed node and above.
        r!(0, RM, 0, "/local/domain/1/data\0" => RM, "OK\0"),
        ev!(1, [("data/x", "xw"), ("data", "tok")]),
        ev!(2, []),
        // An event identical to one still queued is not queued again.
        r!(0, WATCH, 0, "/tool\0t\0" => WATCH, "OK\0"),
        r!(0, WRITE, 0, "/tool/a\0v1" => WRITE, "OK\0"),
        r!(0, WRITE, 0, "/tool/a\0v2" => WRITE, "OK\0"),
        ev!(0, [("/tool", "t"), ("/tool/a", "t")]),
        r!(0, UNWATCH, 0, "/tool\0t\0" => UNWATCH, "OK\0"),
        r!(1, RESET_WATCHES, 0, "" => RESET_WATCHES, "OK\0"),
        r!(0, WRITE, 0, "/local/domain/1/data\0" => WRITE, "OK\0"),
        ev!(1, []),
        // --- Transactions -----------------------------------------------------
        r!(0, MKDIR, 0, "/local/domain/1/tx\0" => MKDIR, "OK\0"),
        r!(0, SET_PERMS, 0, "/local/domain/1/tx\0n1\0" => SET_PERMS, "OK\0"),
        r!(1, WATCH, 0, "tx\0txw\0" => WATCH, "OK\0"),
        ev!(1, [("tx", "txw")]),
        // Commit: invisible until then, no events until then.
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "1\0"),
        r!(1, WRITE, 1, "tx/a\0one" => WRITE, "OK\0"),
        r!(1, READ, 1, "tx/a\0" => READ, "one"),
        r!(1, READ, 0, "tx/a\0" => ERROR, "ENOENT\0"),
        ev!(1, []),
        r!(1, TRANSACTION_END, 1, "T\0" => TRANSACTION_END, "OK\0"),
        ev!(1, [("tx/a", "txw")]),
        r!(1, READ, 0, "tx/a\0" => READ, "one"),
        r!(1, TRANSACTION_END, 1, "T\0" => ERROR, "ENOENT\0"),
        // Abort.
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "2\0"),
        r!(1, WRITE, 2, "tx/b\0two" => WRITE, "OK\0"),
        r!(1, TRANSACTION_END, 2, "F\0" => TRANSACTION_END, "OK\0"),
        r!(1, READ, 0, "tx/b\0" => ERROR, "ENOENT\0"),
        ev!(1, []),
        // A node the transaction read changes: EAGAIN, nothing applied.
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "3\0"),
        r!(1, READ, 3, "tx/a\0" => READ, "one"),
        r!(0, WRITE, 0, "/local/domain/1/tx/a\0changed" => WRITE, "OK\0"),
        r!(1, READ, 3, "tx/a\0" => READ, "one"),
        r!(1, WRITE, 3, "tx/c\0three" => WRITE, "OK\0"),
        r!(1, TRANSACTION_END, 3, "T\0" => ERROR, "EAGAIN\0"),
        r!(1, READ, 0, "tx/c\0" => ERROR, "ENOENT\0"),
        r!(1, READ, 0, "tx/a\0" => READ, "changed"),
        ev!(1, [("tx/a", "txw")]),
        // A node it found missing appears: EAGAIN too.
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "4\0"),
        r!(1, READ, 4, "tx/new\0" => ERROR, "ENOENT\0"),
        r!(0, WRITE, 0, "/local/domain/1/tx/new\0" => WRITE, "OK\0"),
        r!(1, TRANSACTION_END, 4, "T\0" => ERROR, "EAGAIN\0"),
        ev!(1, [("tx/new", "txw")]),
        // Unrelated changes do not conflict.
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "5\0"),
        r!(1, WRITE, 5, "tx/d\0four" => WRITE, "OK\0"),
        r!(0, WRITE, 0, "/local/domain/1/data/other\0" => WRITE, "OK\0"),
        r!(1, TRANSACTION_END, 5, "T\0" => TRANSACTION_END, "OK\0"),
        ev!(1, [("tx/d", "txw")]),
        // Removal inside a transaction.
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "6\0"),
        r!(1, RM, 6, "tx/a\0" => RM, "OK\0"),
        r!(1, READ, 6, "tx/a\0" => ERROR, "ENOENT\0"),
        r!(1, READ, 0, "tx/a\0" => READ, "changed"),
        r!(1, TRANSACTION_END, 6, "T\0" => TRANSACTION_END, "OK\0"),
        r!(1, READ, 0, "tx/a\0" => ERROR, "ENOENT\0"),
        ev!(1, [("tx/a", "txw")]),
        // Bad ids, nesting, bad arguments; ids belong to a connection.
        r!(1, READ, 99, "tx/d\0" => ERROR, "ENOENT\0"),
        r!(1, TRANSACTION_END, 0, "T\0" => ERROR, "ENOENT\0"),
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "7\0"),
        r!(1, TRANSACTION_START, 7, "\0" => ERROR, "EBUSY\0"),
        r!(1, TRANSACTION_END, 7, "X\0" => ERROR, "EINVAL\0"),
        r!(1, TRANSACTION_END, 7, "F\0" => TRANSACTION_END, "OK\0"),
        r!(2, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "1\0"),
        r!(1, TRANSACTION_END, 1, "F\0" => ERROR, "ENOENT\0"),
        r!(2, TRANSACTION_END, 1, "F\0" => TRANSACTION_END, "OK\0"),
        // WATCH ignores the transaction id.
        r!(1, WATCH, 42, "tx\0t42\0" => WATCH, "OK\0"),
        ev!(1, [("tx", "t42")]),
        // Creating parents fires only for the node asked for.
        r!(1, MKDIR, 0, "tx/p/q\0" => MKDIR, "OK\0"),
        ev!(1, [("tx/p/q", "txw"), ("tx/p/q", "t42")]),
        // At commit, events come in the order nodes were first touched.
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "8\0"),
        r!(1, WRITE, 8, "tx/m/n\0v" => WRITE, "OK\0"),
        r!(1, WRITE, 8, "tx/d\0five" => WRITE, "OK\0"),
        r!(1, RM, 8, "tx/p\0" => RM, "OK\0"),
        r!(1, TRANSACTION_END, 8, "T\0" => TRANSACTION_END, "OK\0"),
        ev!(
            1,
            [
                ("tx/m/n", "txw"),
                ("tx/m/n", "t42"),
                ("tx/d", "txw"),
                ("tx/d", "t42"),
                ("tx/p", "txw"),
                ("tx/p", "t42"),
            ]
        ),
        // --- SET_TARGET, RELEASE, @releaseDomain -------------------------------
        r!(0, INTRODUCE, 0, concat!("3\0", "1\0", "1\0") => INTRODUCE, "OK\0"),
        ev!(0, [("@introduceDomain", "intro")]),
        r!(3, READ, 0, "/local/domain/1/tx/d\0" => ERROR, "EACCES\0"),
        r!(0, SET_TARGET, 0, concat!("3\0", "1\0") => SET_TARGET, "OK\0"),
        r!(3, READ, 0, "/local/domain/1/tx/d\0" => READ, "five"),
        r!(0, SET_TARGET, 0, concat!("3\0", "9\0") => ERROR, "ENOENT\0"),
        r!(1, WATCH, 0, "@releaseDomain\0r1\0" => WATCH, "OK\0"),
        ev!(1, [("@releaseDomain", "r1")]),
        r!(0, WATCH, 0, "@releaseDomain\0rel\0" => WATCH, "OK\0"),
        ev!(0, [("@releaseDomain", "rel")]),
        r!(0, RELEASE, 0, "3\0" => RELEASE, "OK\0"),
        ev!(0, [("@releaseDomain", "rel")]),
        // Special events need read access to the special node.
        ev!(1, []),
        r!(0, RELEASE, 0, "3\0" => ERROR, "ENOENT\0"),
        r!(0, RELEASE, 0, "0\0" => ERROR, "EINVAL\0"),
        r!(0, IS_DOMAIN_INTRODUCED, 0, "3\0" => IS_DOMAIN_INTRODUCED, "F\0"),
        r!(0, SET_PERMS, 0, "@releaseDomain\0n0\0r1\0" => SET_PERMS, "OK\0"),
        ev!(0, [("@releaseDomain", "rel")]),
        ev!(1, [("@releaseDomain", "r1")]),
        r!(0, INTRODUCE, 0, concat!("4\0", "1\0", "1\0") => INTRODUCE, "OK\0"),
        ev!(0, [("@introduceDomain", "intro")]),
        r!(0, RELEASE, 0, "4\0" => RELEASE, "OK\0"),
        ev!(0, [("@releaseDomain", "rel")]),
        ev!(1, [("@releaseDomain", "r1")]),
    ];
    let mut xs = Xenstored::new(Config::default());
    run(&mut xs, &steps);
}

#[test]
fn conformance_small_quotas() {
    let config = Config {
        quota_nodes_per_domain: 4,
        quota_watches_per_domain: 1,
        quota_transactions_per_domain: 1,
        quota_node_size: 64,
        quota_perms_per_node: 2,
        quota_path_max: 16,
        quota_transaction_nodes: 6,
        ..Config::default()
    };
    let steps = [
        r!(0, MKDIR, 0, "/local/domain/1/q\0" => MKDIR, "OK\0"),
        // dom1 now owns one node.
        r!(0, SET_PERMS, 0, "/local/domain/1/q\0n1\0" => SET_PERMS, "OK\0"),
        // --- Nodes per domain: 4 -------------------------------------------
        r!(1, WRITE, 0, "q/a\0" => WRITE, "OK\0"),
        r!(1, WRITE, 0, "q/b\0" => WRITE, "OK\0"),
        r!(1, WRITE, 0, "q/c\0" => WRITE, "OK\0"),
        r!(1, WRITE, 0, "q/d\0" => ERROR, "ENOSPC\0"),
        r!(1, MKDIR, 0, "q/e/f\0" => ERROR, "ENOSPC\0"),
        r!(1, WRITE, 0, "q/c\0changed" => WRITE, "OK\0"),
        r!(1, RM, 0, "q/c\0" => RM, "OK\0"),
        r!(1, WRITE, 0, "q/d\0" => WRITE, "OK\0"),
        // --- Node size: 16 + 8 per permission + data + children <= 64 ---------
        r!(1, WRITE, 0, concat!("q/a\0", "0123456789012345678901234567890123456789") => WRITE, "OK\0"),
        r!(1, WRITE, 0, concat!("q/a\0", "0123456789012345678901234567890123456789x") => ERROR, "ENOSPC\0"),
        r!(0, WRITE, 0, concat!("/local/domain/1/q/a\0", "0123456789012345678901234567890123456789x") => WRITE, "OK\0"),
        // --- Permissions per node: 2 -----------------------------------------
        r!(1, SET_PERMS, 0, "q/b\0n1\0r2\0" => SET_PERMS, "OK\0"),
        r!(1, SET_PERMS, 0, "q/b\0n1\0r2\0r3\0" => ERROR, "ENOSPC\0"),
        r!(0, SET_PERMS, 0, "/local/domain/1/q/b\0n1\0r2\0r3\0" => SET_PERMS, "OK\0"),
        // --- Path length: 16 after /local/domain/<id>/ -----------------------
        r!(1, READ, 0, "q/abcdefghijklmn\0" => ERROR, "ENOENT\0"),
        r!(1, READ, 0, "q/abcdefghijklmno\0" => ERROR, "EINVAL\0"),
        r!(1, READ, 0, "/local/domain/1/q/abcdefghijklmno\0" => ERROR, "EINVAL\0"),
        r!(0, READ, 0, "/local/domain/1/q/abcdefghijklmno\0" => ERROR, "ENOENT\0"),
        // --- Transactions: Xen refuses only once *more* than the quota are
        // open, so quota + 1 may be.
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "1\0"),
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "2\0"),
        r!(1, TRANSACTION_START, 0, "\0" => ERROR, "ENOSPC\0"),
        r!(1, TRANSACTION_END, 2, "F\0" => TRANSACTION_END, "OK\0"),
        // --- Nodes one transaction may touch: 6 (reads count) ---------------
        r!(1, READ, 1, "q/b\0" => READ, ""),
        r!(1, READ, 1, "q/d\0" => READ, ""),
        // A missing node touches its parent too.
        r!(1, READ, 1, "q/z1\0" => ERROR, "ENOENT\0"),
        r!(1, READ, 1, "q/z2\0" => ERROR, "ENOENT\0"),
        r!(1, READ, 1, "q/z3\0" => ERROR, "ENOENT\0"),
        r!(1, READ, 1, "q/z4\0" => ERROR, "ENOSPC\0"),
        r!(1, TRANSACTION_END, 1, "T\0" => ERROR, "ENOMEM\0"),
        // --- Node quota again at commit, if the transaction created nodes ----
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "3\0"),
        r!(1, RM, 3, "q/d\0" => RM, "OK\0"),
        r!(1, WRITE, 3, "q/e\0" => WRITE, "OK\0"),
        r!(1, TRANSACTION_END, 3, "T\0" => ERROR, "ENOSPC\0"),
        r!(1, READ, 0, "q/d\0" => READ, ""),
        r!(1, READ, 0, "q/e\0" => ERROR, "ENOENT\0"),
        r!(1, TRANSACTION_START, 0, "\0" => TRANSACTION_START, "4\0"),
        r!(1, RM, 4, "q/d\0" => RM, "OK\0"),
        r!(1, TRANSACTION_END, 4, "T\0" => TRANSACTION_END, "OK\0"),
        r!(1, WRITE, 0, "q/e\0" => WRITE, "OK\0"),
        r!(1, WRITE, 0, "q/f\0" => ERROR, "ENOSPC\0"),
        // --- Watches: likewise quota + 1 ------------------------------------
        r!(1, WATCH, 0, "q\0w1\0" => WATCH, "OK\0"),
        r!(1, WATCH, 0, "q\0w2\0" => WATCH, "OK\0"),
        r!(1, WATCH, 0, "q\0w3\0" => ERROR, "E2BIG\0"),
        r!(1, UNWATCH, 0, "q\0w2\0" => UNWATCH, "OK\0"),
        r!(1, WATCH, 0, "q\0w3\0" => WATCH, "OK\0"),
        ev!(1, [("q", "w1"), ("q", "w2"), ("q", "w3")]),
        // dom0 has no quotas.
        r!(0, WATCH, 0, "/\0a\0" => WATCH, "OK\0"),
        r!(0, WATCH, 0, "/\0b\0" => WATCH, "OK\0"),
        r!(0, WATCH, 0, "/\0c\0" => WATCH, "OK\0"),
        ev!(0, [("/", "a"), ("/", "b"), ("/", "c")]),
    ];
    let mut xs = Xenstored::new(config);
    run(&mut xs, &steps);
}

/// DIRECTORY_PART pages through a long child list; DIRECTORY of it is too
/// long for one reply (E2BIG).
#[test]
fn directory_part_and_oversized_reply() {
    let mut xs = Xenstored::new(Config::default());
    let mut names = Vec::new();
    for i in 0..120 {
        let name = format!("child-{i:03}-{}", "x".repeat(30));
        let req = format!("/big/{name}\0");
        assert_eq!(
            xs.request(DomId(0), t::MKDIR, 0, req.as_bytes()).payload,
            b"OK\0"
        );
        names.push(name);
    }
    let r = xs.request(DomId(0), t::DIRECTORY, 0, b"/big\0");
    assert_eq!((r.type_, r.payload), (t::ERROR, b"E2BIG\0".to_vec()));

    let mut got: Vec<String> = Vec::new();
    let mut offset = 0usize;
    let mut generation = None;
    loop {
        let req = format!("/big\0{offset}\0");
        let r = xs.request(DomId(0), t::DIRECTORY_PART, 0, req.as_bytes());
        assert_eq!(r.type_, t::DIRECTORY_PART, "{}", r.payload.escape_ascii());
        assert!(r.payload.len() <= 4096);
        let mut parts = r.payload.split(|&b| b == 0);
        let gen_str = parts.next().unwrap().to_vec();
        assert_eq!(*generation.get_or_insert(gen_str.clone()), gen_str);
        let body = &r.payload[gen_str.len() + 1..];
        // A final empty string marks the end of the list.
        let done = body.ends_with(b"\0\0") || body == b"\0";
        let list = if done { &body[..body.len() - 1] } else { body };
        for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            offset += n.len() + 1;
            got.push(String::from_utf8(n.to_vec()).unwrap());
        }
        if done {
            break;
        }
    }
    assert_eq!(got, names);
    // Past the end: the generation and an empty string.
    let r = xs.request(
        DomId(0),
        t::DIRECTORY_PART,
        0,
        concat!("/big\0", "9999\0").as_bytes(),
    );
    let mut want = generation.unwrap();
    want.extend_from_slice(b"\0\0");
    assert_eq!(r.payload, want);
    // Two arguments exactly.
    let r = xs.request(DomId(0), t::DIRECTORY_PART, 0, b"/big\0");
    assert_eq!(r.payload, b"EINVAL\0");
}

/// The simulator shares one xenstored between threads behind a mutex.
#[test]
fn xenstored_is_send() {
    fn send<T: Send>() {}
    send::<Xenstored>();
}

/// A node count as seen by `node_count`, after creations and removals.
#[test]
fn node_count_tracks_the_tree() {
    let mut xs = Xenstored::new(Config::default());
    assert_eq!(xs.node_count(), 4);
    xs.request(DomId(0), t::WRITE, 0, b"/a/b/c\0v");
    assert_eq!(xs.node_count(), 7);
    xs.request(DomId(0), t::RM, 0, b"/a\0");
    assert_eq!(xs.node_count(), 4);
    let r = xs.request(DomId(0), t::TRANSACTION_START, 0, b"\0");
    assert_eq!(r.payload, b"1\0");
    xs.request(DomId(0), t::WRITE, 1, b"/x/y\0v");
    assert_eq!(xs.node_count(), 4);
    let r = xs.request(DomId(0), t::TRANSACTION_END, 1, b"T\0");
    assert_eq!(r.payload, b"OK\0");
    assert_eq!(xs.node_count(), 6);
}
