//! The conformance suite's results side by side: the simulator (run here)
//! and every QEMU run of the `conformance` guest saved under
//! `target/xenpal-qemu/out/<run>/conformance/`, judged against the
//! differences `docs/FIDELITY.md` explains.
//!
//! A case is *identical* when every platform observed the same outcome and
//! each judged it as Xen's; otherwise each platform whose outcome differs
//! from the simulator's (or that judged its own outcome wrong, or could not
//! run the case) must be listed for that case in `docs/FIDELITY.md`'s
//! table — then the case is *explained*, else *unexplained*.

use crate::cpio::Entry;
use crate::dom0::script;
use std::path::Path;
use xenpal_apps::conformance::{self, Line};

/// Where a QEMU run of the conformance guest saves its lines
/// (`name\tobserved\tok|unexpected`).
pub const RESULTS: &str = "conformance.tsv";

/// Save the `conformance ...` lines of a run.
pub fn save(out: &Path, guest_lines: &[String]) -> Result<(), String> {
    let text: String = guest_lines
        .iter()
        .filter_map(|l| conformance::parse_line(l))
        .map(|c| {
            let ok = if c.as_expected { "ok" } else { "unexpected" };
            format!("{}\t{}\t{ok}\n", c.name, c.observed)
        })
        .collect();
    let path = out.join(RESULTS);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn load(path: &Path) -> Option<Vec<Line>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some(Line {
                    name: f.next()?.to_string(),
                    observed: f.next()?.to_string(),
                    as_expected: f.next()? == "ok",
                })
            })
            .collect(),
    )
}

/// Sourced by dom0's `/init` once the guest is up (`say` and `fail` come
/// from there): a second copy of the guest beside it, and each told the
/// other's id, so the suite's two-domain cases run.
const WITH: &str = r#"sed 's/^name = "xenpal"$/name = "xenpal-peer"/' /etc/xen/guest.cfg > /run/peer.cfg
xl create /run/peer.cfg || fail "xl create of the second guest"
a=$(xl domid xenpal) && b=$(xl domid xenpal-peer) || fail "xl domid"
xenstore-write /local/domain/$a/data/peer-domid $b /local/domain/$b/data/peer-domid $a \
    || fail "xenstore-write data/peer-domid"
say "conformance: second guest (domain $b) beside the first (domain $a)"
"#;

/// Run once the first guest has shut down: the second goes too.
const AFTER: &str = r#"xl destroy xenpal-peer 2>/dev/null
say "conformance: second guest gone"
"#;

/// dom0's extra files for the conformance guest: the hooks `/init` runs.
pub fn dom0_files() -> Vec<(String, Entry)> {
    vec![
        script("etc/xen/with-guest", WITH),
        script("etc/xen/after-guest", AFTER),
    ]
}

/// The suite on the simulator, two guests as `apps/tests/conformance_sim.rs`
/// runs it, with the dummy XSM policy or SILO.
pub fn sim_column(xsm_silo: bool) -> Vec<Line> {
    let (r, _) = conformance::on_simulator(1, xsm_silo);
    r.cases
        .iter()
        .filter_map(|c| conformance::parse_line(&c.line()))
        .collect()
}

/// One explained difference: cases and platforms (globs with `*`; several
/// separated by commas) and why.
#[derive(Debug, Clone)]
pub struct Explained {
    /// Case names it covers.
    pub case: String,
    /// Platform (run) names it covers.
    pub platform: String,
    /// The reason.
    pub reason: String,
}

/// The table of `docs/FIDELITY.md`: rows `| case | platform | reason |`
/// under the heading `## Explained differences`, the first cell in
/// backquotes.
pub fn explanations(doc: &str) -> Vec<Explained> {
    let mut out = Vec::new();
    let mut inside = false;
    for l in doc.lines() {
        if l.starts_with("## ") {
            inside = l.trim() == "## Explained differences";
            continue;
        }
        if !inside || !l.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
        if let [case, platform, reason, ..] = cells[..] {
            out.push(Explained {
                case: case.replace('`', ""),
                platform: platform.replace('`', ""),
                reason: reason.to_string(),
            });
        }
    }
    out
}

/// `*` matches any run of characters; everything else itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

/// Whether any of the comma-separated globs matches.
fn any_glob(patterns: &str, s: &str) -> bool {
    patterns.split(',').any(|p| glob(p.trim(), s))
}

/// How the cases came out across the platforms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Distinct cases.
    pub cases: usize,
    /// Same outcome everywhere, as Xen's everywhere.
    pub identical: usize,
    /// Different somewhere, every difference listed in FIDELITY.md.
    pub explained: usize,
    /// The rest.
    pub unexplained: usize,
}

/// What [`compare`] found.
#[derive(Debug, Default)]
pub struct Comparison {
    /// The counts.
    pub counts: Counts,
    /// `(case, platform)` differences no explanation covers.
    pub unexplained: Vec<(String, String)>,
    /// For each explanation, the differences it covered.
    pub used: Vec<usize>,
}

/// Compare the columns (the first is the simulator, the reference the
/// others are compared with).
pub fn compare(columns: &[(String, Vec<Line>)], explained: &[Explained]) -> Comparison {
    let mut names: Vec<&str> = Vec::new();
    for (_, lines) in columns {
        for l in lines {
            if !names.contains(&l.name.as_str()) {
                names.push(&l.name);
            }
        }
    }
    let mut c = Counts {
        cases: names.len(),
        ..Counts::default()
    };
    let mut missing = Vec::new();
    let mut used = vec![0; explained.len()];
    for n in names {
        let cell = |col: &(String, Vec<Line>)| col.1.iter().find(|l| l.name == n).cloned();
        let reference = columns.first().and_then(cell);
        let mut differs = Vec::new();
        for col in columns {
            let here = cell(col);
            let same = match (&here, &reference) {
                (Some(h), Some(r)) => {
                    h.as_expected && h.observed == r.observed && h.observed != "n/a"
                }
                _ => false,
            };
            if !same {
                differs.push(col.0.clone());
            }
        }
        if differs.is_empty() {
            c.identical += 1;
            continue;
        }
        let mut unexplained = Vec::new();
        for p in differs {
            match explained
                .iter()
                .position(|e| any_glob(&e.case, n) && any_glob(&e.platform, &p))
            {
                Some(i) => used[i] += 1,
                None => unexplained.push(p),
            }
        }
        if unexplained.is_empty() {
            c.explained += 1;
        } else {
            c.unexplained += 1;
            missing.extend(unexplained.into_iter().map(|p| (n.to_string(), p)));
        }
    }
    Comparison {
        counts: c,
        unexplained: missing,
        used,
    }
}

/// The conformance results of every saved QEMU run under `base/out`.
pub fn saved_runs(base: &Path) -> Vec<(String, Vec<Line>)> {
    let mut runs = Vec::new();
    let Ok(dirs) = std::fs::read_dir(base.join("out")) else {
        return runs;
    };
    for d in dirs.flatten() {
        if let Some(lines) = load(&d.path().join("conformance").join(RESULTS)) {
            runs.push((d.file_name().to_string_lossy().into_owned(), lines));
        }
    }
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    runs
}

/// Print the cases side by side and the contract line; `Ok` unless a
/// difference is unexplained.
pub fn report(root: &Path, base: &Path) -> Result<Counts, String> {
    let mut columns = vec![
        ("simulator".to_string(), sim_column(false)),
        ("simulator-silo".to_string(), sim_column(true)),
    ];
    columns.extend(saved_runs(base));
    let doc_path = root.join("docs/FIDELITY.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap_or_default();
    let explained = explanations(&doc);
    println!(
        "== conformance results side by side (QEMU runs saved under {}):",
        base.join("out").display()
    );
    for (i, (name, lines)) in columns.iter().enumerate() {
        let n_ok = lines
            .iter()
            .filter(|l| l.as_expected && l.observed != "n/a")
            .count();
        let n_na = lines.iter().filter(|l| l.observed == "n/a").count();
        println!(
            "   [{i}] {name}: {} cases, {n_ok} as expected, {n_na} n/a",
            lines.len()
        );
    }
    let names: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for (_, lines) in &columns {
            for l in lines {
                if !v.contains(&l.name) {
                    v.push(l.name.clone());
                }
            }
        }
        v
    };
    let width = names.iter().map(String::len).max().unwrap_or(4);
    let head: String = (0..columns.len()).map(|i| format!(" | [{i}]")).collect();
    println!("   {:<width$}{head}", "case");
    for n in &names {
        let mut row = format!("   {n:<width$}");
        for (_, lines) in &columns {
            let cell = lines
                .iter()
                .find(|l| &l.name == n)
                .map_or("-".to_string(), |l| {
                    if l.as_expected {
                        l.observed.clone()
                    } else {
                        format!("{} (unexpected)", l.observed)
                    }
                });
            row.push_str(&format!(" | {cell}"));
        }
        println!("{row}");
    }
    let cmp = compare(&columns, &explained);
    for (e, n) in explained.iter().zip(&cmp.used).filter(|(_, n)| **n > 0) {
        println!(
            "   explained ({n}): {} on {}: {}",
            e.case, e.platform, e.reason
        );
    }
    for (case, platform) in &cmp.unexplained {
        println!("   unexplained: {case} on {platform}");
    }
    let c = cmp.counts;
    println!(
        "conformance: cases={} identical={} explained={} unexplained={}",
        c.cases, c.identical, c.explained, c.unexplained
    );
    if c.unexplained > 0 {
        return Err(format!(
            "{} case(s) differ without a reason in {}",
            c.unexplained,
            doc_path.display()
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, observed: &str, ok: bool) -> Line {
        Line {
            name: name.into(),
            observed: observed.into(),
            as_expected: ok,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("xs.*", "xs.read.missing"));
        assert!(glob("*-xen4.17*", "aarch64-gic3-xen4.17-linux-dom0"));
        assert!(!glob("*-xen4.17*", "aarch64-gic3-xen4.20"));
        assert!(glob("a", "a") && !glob("a", "ab") && glob("*", ""));
        assert!(any_glob(
            "x86_64-xen4.20, aarch64-*",
            "aarch64-gic2-xen4.20"
        ));
        assert!(!any_glob(
            "x86_64-xen4.20, x86_64-xen4.17",
            "x86_64-xen4.17-linux-dom0"
        ));
    }

    #[test]
    fn differences_count_only_when_explained() {
        let sim = (
            "simulator".to_string(),
            vec![
                line("a", "ok", true),
                line("b", "-EINVAL", true),
                line("c", "ok", true),
            ],
        );
        let arm = (
            "aarch64-gic3-xen4.20".to_string(),
            vec![
                line("a", "ok", true),
                line("b", "n/a", true),
                line("c", "-EPERM", false),
            ],
        );
        let doc = "# F\n## Explained differences\n| case | platform | reason |\n|---|---|---|\n| `b` | `aarch64-*` | no b on Arm |\n## Other\n| `c` | `*` | not in the table |\n";
        let ex = explanations(doc);
        assert_eq!(ex.len(), 1);
        let cmp = compare(&[sim.clone(), arm.clone()], &ex);
        assert_eq!(
            cmp.counts,
            Counts {
                cases: 3,
                identical: 1,
                explained: 1,
                unexplained: 1
            }
        );
        assert_eq!(
            cmp.unexplained,
            vec![("c".to_string(), "aarch64-gic3-xen4.20".to_string())]
        );
        assert_eq!(cmp.used, vec![1]);
        // A case missing on a platform is a difference too.
        let x86 = ("x86_64-xen4.20".to_string(), vec![line("a", "ok", true)]);
        assert_eq!(compare(&[sim, x86], &ex).counts.unexplained, 2);
    }
}
