//! `cargo xtask bench --xen`: the static-site guest on emulated Xen (the
//! x86_64 Linux dom0 rig: Xen 4.17, Debian's dom0, QEMU TCG), against a
//! Linux domU doing the same job in the same rig: Debian's kernel (the
//! one dom0 runs) with an initramfs of busybox, `xen-netfront` and the
//! same two files, serving with busybox `httpd`, given the same memory.
//!
//! Everything is measured inside dom0, by a hook ([`SCRIPT`]) `/init` runs
//! before it would start the guest, which prints `bench-xen ...` lines and
//! powers off; the runner only builds the rig, boots it and reads the lines.
//! Times come from dom0's `/proc/uptime` (10 ms steps).
//!
//! - `xen-boot-to-serve`: from `xl create` to the first HTTP answer from
//!   the guest (dom0 tries `wget` every 0.1 s, each try in the background
//!   so a try stuck on a lost SYN holds none back), ours and Linux's
//!   alternately, 5 rounds; a guest is destroyed after each round.
//! - `xen-download`: with both guests up, dom0 `wget`s a 4 MiB file from
//!   each, alternately, 5 rounds (the size is checked).
//! - `xen-density`: the smallest `memory=` (MiB) at which a site guest
//!   answers and lives through a burst of [`BURST`] clients fetching the
//!   big file at once (clients it has no memory for are reset); then site
//!   guests at the goal's 8 MiB (or that smallest, if more) are created one
//!   after the other, each answering before the next is made, until
//!   [`DENSITY_GUESTS`] or the first failure, all sharing the site image
//!   read-only; at the end each is asked again.
//!   Rows: guests serving (against the goal of 100), the smallest memory
//!   (against 8 MiB), and `xl create` time of the last 10 guests against
//!   the first 10 (flat: within ×[`FLAT`]).

use super::{ROUNDS, Row, median};
use crate::cpio::{Archive, Entry};
use crate::dom0::Kernel;
use std::path::Path;
use std::time::{Duration, Instant};

/// Guests the density measure creates at most.
pub const DENSITY_GUESTS: usize = 100;

/// Guests with `--quick`.
const DENSITY_GUESTS_QUICK: usize = 10;

/// The file `xen-download` fetches, and its size.
const BIG: &str = "file-4m.bin";
const BIG_BYTES: usize = 4 << 20;

/// Clients at once in the burst each memory size must live through.
const BURST: usize = 50;

/// The page `xen-boot-to-serve` asks for.
const PAGE: &str = "index.html";

/// The Linux domU's address and MAC (ours is [`crate::site::GUEST_IP`]).
const LINUX_IP: &str = "10.0.2.17";
const LINUX_MAC: &str = "00:16:3e:00:00:03";

/// Both guests' memory (MiB) for the boot and download rounds.
const MEMORY_MIB: u32 = 128;

/// The memory goal per density guest (MiB).
const DENSITY_MIB_GOAL: f64 = 8.0;

/// "Creation time flat": the last guests' `xl create` time within this
/// factor of the first ones'.
const FLAT: f64 = 1.25;

/// The hook: dom0's `/etc/xen/before-guest`, sourced by `/init` (which
/// defines `say` and `fail`), with `@GUESTS@` and the other markers
/// replaced. It never returns: it powers off when done.
const SCRIPT: &str = r#"# cargo xtask bench --xen: every measure, then power off.
ip addr add 10.0.2.1/24 dev xenbr0 || fail "address on xenbr0"
[ -b /dev/vda ] || fail "no /dev/vda (the site image)"
now() { cut -d ' ' -f 1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# up IP T0 LIMIT [NAME]: ask http://IP/@PAGE@ every 0.1 s, each try in the
# background, until one answers; print the seconds from T0 to that answer
# (and, with NAME, to the guest's console saying it listens). Fails after
# LIMIT seconds, or at once if guest NAME's console shows a panic.
up() {
    f=/run/up-$1; rm -f $f
    log=/var/log/xen/console/guest-$4.log; heard=-
    n=0
    while [ ! -s $f ]; do
        ( timeout 10 wget -q -O /dev/null "http://$1/@PAGE@" 2>/dev/null \
            && [ ! -s $f ] && now > $f ) > /dev/null 2>&1 &
        usleep 100000
        if [ -n "$4" ]; then
            [ $heard = - ] && grep -q "listening on" $log 2>/dev/null \
                && heard=$(awk -v a="$2" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
            grep -q "^panic" $log 2>/dev/null && return 1
        fi
        n=$((n + 1)); [ $n -ge $(($3 * 10)) ] && return 1
    done
    awk -v a="$2" -v b="$(head -n 1 $f)" 'BEGIN { printf "%.2f", b - a }'
    if [ -n "$4" ]; then echo " $heard"; fi
}
# cfg NAME MEMORY MAC IP ACCESS: /run/NAME.cfg, the site guest's config
# with those changed.
cfg() {
    sed -e "s/^name = .*/name = \"$1\"/" -e "s/^memory = .*/memory = $2/" \
        -e "s/mac=[0-9a-f:]*/mac=$3/" -e "s#ip=[0-9.]*/24#ip=$4/24#" \
        -e "s/access=rw/access=$5/" /etc/xen/guest.cfg > /run/$1.cfg
}
# start NAME ARGS: xl create ARGS (a config, perhaps after -p), or fail with
# what xl said.
start() {
    xl create -q $2 > /run/xl-$1.log 2>&1 || fail "xl create $1: $(tail -n 3 /run/xl-$1.log | tr '\n' ' ')"
}
# console NAME: the last lines of a guest's console, on one line.
console() { tail -n 15 /var/log/xen/console/guest-$1.log 2>/dev/null | tr '\n' '|'; }
cfg xenpal @MEMORY@ @MAC@ @IP@ rw
cp /etc/xen/linux.cfg /run/linux.cfg
say "bench-xen start: xenpal at @IP@, Linux at @LINUX_IP@, @MEMORY@ MiB each"
for round in 1 2 3 4 5; do
    for g in xenpal linux; do
        [ $g = xenpal ] && ip=@IP@ || ip=@LINUX_IP@
        t0=$(now)
        start $g /run/$g.cfg
        c=$(since $t0)
        t=$(up $ip $t0 180 $g) || fail "$g does not answer at $ip within 180 s: $(console $g)"
        say "bench-xen boot $g $t $c"
        xl destroy $g
    done
done
# Where `xl create` spends its time: the same domains created paused
# (built, devices attached, not run), and with no devices.
for g in xenpal linux; do
    sed -e '/^vif = /d' -e '/^disk = /d' /run/$g.cfg > /run/$g-nodev.cfg
    for round in 1 2 3; do
        t0=$(now); start $g "-p /run/$g.cfg"; full=$(since $t0); xl destroy $g
        t0=$(now); start $g "-p /run/$g-nodev.cfg"; bare=$(since $t0); xl destroy $g
        say "bench-xen paused $g $full $bare"
    done
done
start xenpal /run/xenpal.cfg
start linux /run/linux.cfg
up @IP@ $(now) 180 > /dev/null || fail "xenpal does not answer: $(console xenpal)"
up @LINUX_IP@ $(now) 180 > /dev/null || fail "linux does not answer: $(console linux)"
for round in 1 2 3 4 5; do
    for g in xenpal linux; do
        [ $g = xenpal ] && ip=@IP@ || ip=@LINUX_IP@
        t0=$(now)
        n=$(wget -q -O - "http://$ip/@BIG@" | wc -c)
        say "bench-xen download $g $(since $t0) $n"
    done
done
# Who is busy during a download: CPU seconds Xen counts for dom0 and for
# the guest over 10 downloads in a row.
cpu() { xl list $1 | tail -n 1 | tr -s ' ' | cut -d ' ' -f 6; }
for g in xenpal linux; do
    [ $g = xenpal ] && ip=@IP@ || ip=@LINUX_IP@
    d0=$(cpu Domain-0); dg=$(cpu $g); t0=$(now)
    for k in 1 2 3 4 5 6 7 8 9 10; do wget -q -O /dev/null "http://$ip/@BIG@"; done
    t=$(since $t0)
    say "bench-xen cpu $g $t $(awk -v a=$d0 -v b=$(cpu Domain-0) 'BEGIN { printf "%.1f", b - a }') $(awk -v a=$dg -v b=$(cpu $g) 'BEGIN { printf "%.1f", b - a }')"
done
xl destroy xenpal
xl destroy linux
# burst NAME IP: @BURST@ clients at once, each fetching the big file, then
# one more request; sets $got (downloads whole) and $alive (answering,
# crashed or silent).
burst() {
    rm -f /run/burst-$1-ok /run/burst-$1-done
    for j in $(seq 1 @BURST@); do
        ( n=$(timeout 60 wget -q -O - "http://$2/@BIG@" 2>/dev/null | wc -c)
          [ "$n" = @BIG_BYTES@ ] && echo >> /run/burst-$1-ok
          echo "$n" >> /run/burst-$1-done ) > /dev/null 2>&1 &
    done
    n=0
    until [ "$(cat /run/burst-$1-done 2>/dev/null | wc -l)" -ge @BURST@ ] || [ $n -ge 90 ] \
        || grep -q "^panic" /var/log/xen/console/guest-$1.log; do
        sleep 1; n=$((n + 1))
    done
    got=$(cat /run/burst-$1-ok 2>/dev/null | wc -l)
    if grep -q "^panic" /var/log/xen/console/guest-$1.log; then
        alive=crashed
    elif timeout 20 wget -q -O /dev/null "http://$2/@PAGE@"; then
        alive=answering
    else
        alive=silent
    fi
}
# The smallest memory at which a guest answers, and lives through a burst
# of clients (those it has no memory for are reset).
min=none
for m in 2 3 4 5 6 7 8 10 12 16 24 32 64; do
    cfg probe$m $m 00:16:3e:00:01:00 10.0.2.100 ro
    if xl create -q /run/probe$m.cfg > /run/xl-probe.log 2>&1; then
        if up 10.0.2.100 $(now) 60 probe$m > /dev/null; then
            burst probe$m 10.0.2.100
            say "bench-xen burst $m @BURST@ $got $alive"
            [ $alive = answering ] && min=$m \
                || say "bench-xen probe $m MiB: $alive after the burst: $(console probe$m)"
        else
            say "bench-xen probe $m MiB: no answer: $(console probe$m)"
        fi
        xl destroy probe$m
    else
        say "bench-xen probe $m MiB: xl create: $(tail -n 2 /run/xl-probe.log | tr '\n' ' ')"
    fi
    [ $min != none ] && break
done
say "bench-xen min-memory $min"
[ $min = none ] && { say "bench-xen end"; poweroff -f; }
mem=@DENSITY_MIB@
[ $min -gt $mem ] && mem=$min
# toolstack N: `xl create -p` of one more site domain, with its devices and
# without, N guests running: what the toolstack's own time does as guests
# pile up, none of it spent running ours.
cfg probe $mem 00:16:3e:00:02:00 10.0.2.250 ro
sed -e '/^vif = /d' -e '/^disk = /d' /run/probe.cfg > /run/probe-nodev.cfg
toolstack() {
    t0=$(now); xl create -q -p /run/probe.cfg > /run/xl-probe.log 2>&1 || return 0
    full=$(since $t0); xl destroy probe
    t0=$(now); xl create -q -p /run/probe-nodev.cfg > /run/xl-probe.log 2>&1 || return 0
    bare=$(since $t0); xl destroy probe
    say "bench-xen toolstack $1 $full $bare"
}
toolstack 0
i=1
while [ $i -le @GUESTS@ ]; do
    mac=00:16:3e:00:01:$(printf %02x $i)
    ip=10.0.2.$((100 + i))
    cfg site$i $mem $mac $ip ro
    t0=$(now)
    if ! xl create -q /run/site$i.cfg > /run/xl-site.log 2>&1; then
        say "bench-xen density-stop $i xl create: $(tail -n 2 /run/xl-site.log | tr '\n' ' ')"
        break
    fi
    c=$(since $t0)
    if ! s=$(up $ip $t0 120 site$i); then
        say "bench-xen density-stop $i no answer: $(console site$i)"
        break
    fi
    say "bench-xen density $i $mem $c $s"
    [ $((i % 10)) = 0 ] && say "bench-xen memory $i guests: dom0 MemAvailable $(grep MemAvailable /proc/meminfo | tr -s ' ' | cut -d ' ' -f 2) kB, Xen $(xl info | grep free_memory | tr -s ' ')"
    i=$((i + 1))
done
toolstack $((i - 1))
ok=0
for j in $(seq 1 $((i - 1))); do
    timeout 20 wget -q -O /dev/null "http://10.0.2.$((100 + j))/@PAGE@" && ok=$((ok + 1))
done
say "bench-xen density-serving $ok $mem $(xl info | grep free_memory | tr -s ' ')"
say "bench-xen end"
poweroff -f
"#;

/// The Linux domU's `/init`: netfront up, busybox `httpd` serving the
/// page and the big file (in the initramfs), an unsolicited ARP, and
/// sleep.
const LINUX_INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-netfront.ko || echo "linux-domU: FAILED: insmod xen-netfront"
ip link set eth0 up && ip addr add @LINUX_IP@/24 dev eth0 || echo "linux-domU: FAILED: eth0"
httpd -p 80 -h /www || echo "linux-domU: FAILED: httpd"
# As our guest does once it listens (Linux's netfront does at connect,
# before the address is set): tell dom0, which may be asking already,
# once the link is up.
n=0
until [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] || [ $n -ge 500 ]; do
    usleep 10000; n=$((n + 1))
done
arping -U -c 1 -I eth0 @LINUX_IP@ > /dev/null 2>&1
echo "linux-domU: listening on @LINUX_IP@:80 (busybox httpd, /www)"
while :; do sleep 3600; done
"#;

/// Replace the markers in [`SCRIPT`] or [`LINUX_INIT`].
fn fill(text: &str, guests: usize) -> String {
    text.replace("@PAGE@", PAGE)
        .replace("@BIG@", BIG)
        .replace("@IP@", crate::site::GUEST_IP)
        .replace("@MAC@", "00:16:3e:00:00:02")
        .replace("@LINUX_IP@", LINUX_IP)
        .replace("@LINUX_MAC@", LINUX_MAC)
        .replace("@MEMORY@", &MEMORY_MIB.to_string())
        .replace("@DENSITY_MIB@", &(DENSITY_MIB_GOAL as u32).to_string())
        .replace("@GUESTS@", &guests.to_string())
        .replace("@BURST@", &BURST.to_string())
        .replace("@BIG_BYTES@", &BIG_BYTES.to_string())
}

/// The site both guests serve: the 1 KB page and the 4 MiB file.
fn site_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (PAGE, super::small_page()),
        (BIG, crate::fullstack::noise(BIG_BYTES)),
    ]
}

/// dom0's extra files for the measures: the hotplug scripts, the hook,
/// and the Linux domU (kernel, initramfs, `xl` config). `busybox` is the
/// static busybox dom0 has too; `guests` is how many density guests.
///
/// Errors: a message if the kernel's netfront module cannot be read.
pub fn dom0_files(
    kernel: &Kernel,
    busybox: &[u8],
    guests: usize,
) -> Result<Vec<(String, Entry)>, String> {
    let mut domu = Archive::default();
    domu.add("bin/busybox", Entry::File(0o755, busybox.to_vec()))?;
    domu.add("bin/sh", Entry::Symlink("busybox".into()))?;
    for d in ["sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp"] {
        domu.add(d, Entry::Dir(0o755))?;
    }
    domu.add(
        "xen-netfront.ko",
        Entry::File(0o644, kernel.module("drivers/net/xen-netfront")?),
    )?;
    for (name, bytes) in site_files() {
        domu.add(&format!("www/{name}"), Entry::File(0o644, bytes))?;
    }
    domu.add(
        "init",
        Entry::File(0o755, fill(LINUX_INIT, guests).into_bytes()),
    )?;
    let image =
        std::fs::read(&kernel.image).map_err(|e| format!("{}: {e}", kernel.image.display()))?;
    let linux_cfg = format!(
        "name = \"linux\"\ntype = \"pv\"\nkernel = \"/guest/linux-kernel\"\n\
         ramdisk = \"/guest/linux-initrd\"\nextra = \"console=hvc0 rdinit=/init quiet\"\n\
         memory = {MEMORY_MIB}\nvcpus = 1\n\
         vif = ['bridge=xenbr0,mac={LINUX_MAC},ip={LINUX_IP}/24,script=/etc/xen/scripts/vif-xenpal']\n"
    );
    let mut files = crate::fullstack::hotplug_scripts();
    files.extend([
        crate::dom0::script("etc/xen/before-guest", &fill(SCRIPT, guests)),
        ("guest/linux-kernel".into(), Entry::File(0o644, image)),
        (
            "guest/linux-initrd".into(),
            Entry::File(0o644, domu.to_bytes()),
        ),
        (
            "etc/xen/linux.cfg".into(),
            Entry::File(0o644, linux_cfg.into_bytes()),
        ),
    ]);
    Ok(files)
}

/// What the dom0 hook printed.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// Seconds from `xl create` to the first answer: ours, Linux's.
    boot: [Vec<f64>; 2],
    /// Seconds `xl create` itself took in those rounds.
    create: [Vec<f64>; 2],
    /// Ten downloads in a row: seconds, and CPU seconds of dom0 and of the
    /// guest (as `xl list` counts them).
    cpu: [Option<(f64, f64, f64)>; 2],
    /// Seconds `xl create -p` took with the devices and without.
    paused: [Vec<(f64, f64)>; 2],
    /// One more site domain created paused, before the density guests and
    /// after: guests running, seconds with its devices and without.
    toolstack: Vec<(usize, f64, f64)>,
    /// Seconds from `xl create` to the guest's console saying it listens
    /// (if dom0 saw it before the first answer).
    listening: [Vec<Option<f64>>; 2],
    /// MB/s of each download: ours, Linux's.
    download: [Vec<f64>; 2],
    min_memory: Option<u32>,
    /// Per density guest: memory (MiB), `xl create` seconds, seconds to
    /// its first answer, seconds to its console saying it listens.
    density: Vec<(u32, f64, f64, Option<f64>)>,
    /// The bursts, one per memory size tried: MiB, clients, downloads
    /// complete, and whether the guest was `answering` after (or
    /// `crashed`, `silent`).
    bursts: Vec<(u32, usize, usize, String)>,
    /// Why the density measure stopped early, if it did.
    stopped: Option<String>,
    /// Density guests answering at the end, and `xl info`'s free memory.
    serving: Option<(usize, String)>,
    end: bool,
}

impl Seen {
    /// Take one console line (`dom0: bench-xen ...`; others are ignored).
    ///
    /// Errors: a message if a `bench-xen` line is malformed or a download
    /// came back short.
    fn take(&mut self, line: &str) -> Result<(), String> {
        let Some(rest) = line.split_once("dom0: bench-xen ").map(|(_, r)| r) else {
            return Ok(());
        };
        let bad = || format!("a malformed line from dom0: {line:?}");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |s: &str| s.parse::<f64>().map_err(|_| bad());
        let side = |g: &str| match g {
            "xenpal" => Ok(0),
            "linux" => Ok(1),
            _ => Err(bad()),
        };
        match f[..] {
            ["boot", g, t, heard, c] => {
                self.boot[side(g)?].push(num(t)?);
                self.create[side(g)?].push(num(c)?);
                self.listening[side(g)?].push(heard.parse().ok());
            }
            ["download", g, t, n] => {
                let n: usize = n.parse().map_err(|_| bad())?;
                if n != BIG_BYTES {
                    return Err(format!("xen-download: {g} sent {n} bytes of {BIG_BYTES}"));
                }
                // /proc/uptime counts in 10 ms steps: never divide by 0.
                self.download[side(g)?].push(BIG_BYTES as f64 / num(t)?.max(0.01) / 1e6);
            }
            ["min-memory", "none"] => self.min_memory = None,
            ["min-memory", m] => self.min_memory = Some(m.parse().map_err(|_| bad())?),
            ["density", _, m, c, s, heard] => {
                self.density.push((
                    m.parse().map_err(|_| bad())?,
                    num(c)?,
                    num(s)?,
                    heard.parse().ok(),
                ));
            }
            ["burst", m, n, got, alive] => self.bursts.push((
                m.parse().map_err(|_| bad())?,
                n.parse().map_err(|_| bad())?,
                got.parse().map_err(|_| bad())?,
                alive.to_string(),
            )),
            ["density-stop", ..] => self.stopped = Some(rest["density-stop ".len()..].into()),
            ["density-serving", n, _, ref free @ ..] => {
                self.serving = Some((n.parse().map_err(|_| bad())?, free.join(" ")))
            }
            ["end"] => self.end = true,
            // `start:`, `probe` and `memory` lines are for people.
            ["cpu", g, t, dom0, guest] => {
                self.cpu[side(g)?] = Some((num(t)?, num(dom0)?, num(guest)?));
            }
            ["paused", g, full, bare] => {
                self.paused[side(g)?].push((num(full)?, num(bare)?));
            }
            ["toolstack", n, full, bare] => {
                self.toolstack
                    .push((n.parse().map_err(|_| bad())?, num(full)?, num(bare)?));
            }
            ["start:" | "probe" | "memory", ..] => {}
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// The rows, with info lines printed.
    ///
    /// Errors: a message if a measure has fewer samples than rounds.
    fn rows(&self, guests: usize) -> Result<Vec<Row>, String> {
        for (what, v) in [("boot", &self.boot), ("download", &self.download)] {
            if v.iter().any(|s| s.len() != ROUNDS) {
                return Err(format!(
                    "xen-{what}: {} and {} samples, want {ROUNDS} each",
                    v[0].len(),
                    v[1].len()
                ));
            }
        }
        let said = |v: &[Option<f64>]| {
            v.iter()
                .map(|t| t.map_or("-".into(), |t| format!("{t:.2}")))
                .collect::<Vec<String>>()
                .join(" ")
        };
        println!(
            "   xen-boot-to-serve: `xl create` itself took {:.2} s (ours) and {:.2} s (Linux), medians; \
             the console said it listens at {} s (ours) and {} s (Linux)",
            median(self.create[0].clone()),
            median(self.create[1].clone()),
            said(&self.listening[0]),
            said(&self.listening[1]),
        );
        for (i, who) in ["ours", "Linux's"].iter().enumerate() {
            let v = &self.paused[i];
            if !v.is_empty() {
                println!(
                    "   xen-boot-to-serve: {who} domain created paused: {:.2} s with its devices, {:.2} s without (medians of {})",
                    median(v.iter().map(|p| p.0).collect()),
                    median(v.iter().map(|p| p.1).collect()),
                    v.len()
                );
            }
        }
        for (i, who) in ["ours", "Linux's"].iter().enumerate() {
            if let Some((t, dom0, guest)) = self.cpu[i] {
                println!(
                    "   xen-download: 10 downloads from {who} in {t:.2} s: dom0 busy {dom0:.1} CPU-s (of 2 vCPUs), the guest {guest:.1} CPU-s"
                );
            }
        }
        let mut rows = vec![
            Row {
                name: "xen-boot-to-serve",
                unit: "s",
                ours: median(self.boot[0].clone()),
                baseline: median(self.boot[1].clone()),
                goal: 0.1,
                smaller_is_better: true,
            },
            Row {
                name: "xen-download",
                unit: "MB/s",
                ours: median(self.download[0].clone()),
                baseline: median(self.download[1].clone()),
                goal: 1.0,
                smaller_is_better: false,
            },
        ];
        for (m, n, got, alive) in &self.bursts {
            let rest = if alive == "answering" {
                "the rest reset; the guest answers after"
            } else if alive == "crashed" {
                "the guest crashed (its console is in the probe line above)"
            } else {
                "the guest no longer answers"
            };
            println!(
                "   xen-density: {m} MiB: a burst of {n} clients fetching {BIG} at once: {got} whole, {rest}"
            );
        }
        if self.min_memory.is_some() && self.bursts.last().is_none_or(|b| b.3 != "answering") {
            return Err("the smallest memory's burst did not leave the guest answering".into());
        }
        for (n, full, bare) in &self.toolstack {
            println!(
                "   xen-density: with {n} guests running, one more created paused took {full:.2} s with its devices, {bare:.2} s without"
            );
        }
        let serving = self.serving.as_ref().map_or(0, |s| s.0);
        println!(
            "   xen-density: smallest memory that serves and lives through the burst: {}; {} of {guests} guests created{}; {serving} answering at the end{}",
            self.min_memory
                .map_or("none".into(), |m| format!("{m} MiB")),
            self.density.len(),
            self.stopped
                .as_ref()
                .map_or(String::new(), |s| format!(" (stopped at guest {s})")),
            self.serving
                .as_ref()
                .map_or(String::new(), |s| format!(" ({})", s.1)),
        );
        rows.push(Row {
            name: "xen-density-guests",
            unit: "guests",
            ours: serving as f64,
            baseline: guests as f64,
            goal: 1.0,
            smaller_is_better: false,
        });
        rows.push(Row {
            name: "xen-density-memory",
            unit: "MiB",
            ours: self.min_memory.map_or(f64::INFINITY, f64::from),
            baseline: DENSITY_MIB_GOAL,
            goal: 1.0,
            smaller_is_better: true,
        });
        let creates: Vec<f64> = self.density.iter().map(|d| d.1).collect();
        // No guests created: no figures, and a row that meets no goal.
        let k = (creates.len() / 2).min(10);
        let (first, last) = if k > 0 {
            (
                median(creates[..k].to_vec()),
                median(creates[creates.len() - k..].to_vec()),
            )
        } else {
            (0.0, 0.0)
        };
        for (i, d) in self.density.iter().enumerate() {
            if i < 3 || (i + 1) % 10 == 0 || i + 1 == self.density.len() {
                println!(
                    "   xen-density: guest {}: xl create {:.2} s, listening {} s and answering {:.2} s after it started",
                    i + 1,
                    d.1,
                    d.3.map_or("-".into(), |t| format!("{t:.2}")),
                    d.2
                );
            }
        }
        rows.push(Row {
            name: "xen-density-create",
            unit: "s",
            ours: last,
            baseline: first,
            goal: FLAT,
            smaller_is_better: true,
        });
        Ok(rows)
    }
}

/// Build the rig, boot it, and return the Xen rows.
///
/// Errors: a message if a build, a package or QEMU fails, dom0 reports a
/// failure, or the run times out.
pub(super) fn rows(root: &Path, quick: bool) -> Result<Vec<Row>, String> {
    let guests = if quick {
        DENSITY_GUESTS_QUICK
    } else {
        DENSITY_GUESTS
    };
    let site = root.join("target/bench/xen-site");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(&site).map_err(|e| format!("{}: {e}", site.display()))?;
    for (name, bytes) in site_files() {
        std::fs::write(site.join(name), bytes).map_err(|e| format!("{name}: {e}"))?;
    }
    let args: Vec<String> = [
        "--arch", "x86_64", "--xen", "4.17", "--dom0", "linux", "--site",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([site.display().to_string(), "site".into()])
    .collect();
    let mut a = crate::parse(&args)?;
    a.bench_xen = Some(guests);
    let base = root.join("target/xenpal-qemu");
    let out = base.join("out").join("bench-xen");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("== bench: xen: building the x86_64 site guest (profile guest)");
    let elf = crate::build_guest(root, &a)?;
    let elf = std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let mut cmd = crate::x86_64_boot(&a, &base, &out, &elf)?;
    let log = out.join("qemu.log");
    println!(
        "== bench: xen: boot-to-serve and download ({ROUNDS} rounds each, against a Linux domU), density (up to {guests} guests); log {}",
        log.display()
    );
    let seen = watch(&mut cmd, &log, if quick { 900 } else { 2400 })?;
    seen.rows(guests)
}

/// Run the rig, collecting what dom0 prints, until `bench-xen end`.
///
/// Errors: QEMU cannot start or ends early, dom0 fails, a line is
/// malformed, no output for 5 minutes, or `timeout_s` passes.
fn watch(cmd: &mut std::process::Command, log: &Path, timeout_s: u64) -> Result<Seen, String> {
    use std::io::Write;
    let (child, rx) = crate::run::spawn_lines(cmd)?;
    let mut qemu = super::Server(child);
    let mut file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let start = Instant::now();
    let mut seen = Seen::default();
    let stall = Duration::from_secs(300);
    loop {
        let left = Duration::from_secs(timeout_s).saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "no end after {timeout_s} s (log: {})",
                log.display()
            ));
        }
        let line = match rx.recv_timeout(left.min(stall)) {
            Ok(l) => l,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if left > stall => {
                return Err(format!(
                    "no console output for {} s (log: {})",
                    stall.as_secs(),
                    log.display()
                ));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = qemu.0.wait().map_err(|e| e.to_string())?;
                return Err(format!(
                    "QEMU ended ({status}) before the measures did (log: {})",
                    log.display()
                ));
            }
        };
        let _ = writeln!(file, "{line}");
        if line.contains("dom0: FAILED") || crate::run::is_fatal(&line) {
            return Err(format!("{} (log: {})", line.trim(), log.display()));
        }
        if line.contains("dom0: bench-xen") || line.contains("dom0: toolstack up") {
            println!("   {} s: {}", start.elapsed().as_secs(), line.trim());
        }
        seen.take(&line)?;
        if seen.end {
            return Ok(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_has_no_marker_left() {
        let s = fill(SCRIPT, 7);
        assert!(!s.contains('@'), "{s}");
        assert!(s.contains("while [ $i -le 7 ]"));
        assert!(!fill(LINUX_INIT, 7).contains('@'));
    }

    #[test]
    fn lines_make_rows() {
        let mut s = Seen::default();
        for i in 0..5 {
            s.take(&format!(
                "(XEN) x\r dom0: bench-xen boot xenpal 1.{i}0 0.9 0.5"
            ))
            .unwrap();
            s.take(&format!("dom0: bench-xen boot linux 2{i}.00 - 0.6"))
                .unwrap();
            s.take(&format!("dom0: bench-xen download xenpal 0.50 {BIG_BYTES}"))
                .unwrap();
            s.take(&format!("dom0: bench-xen download linux 0.25 {BIG_BYTES}"))
                .unwrap();
        }
        s.take("dom0: bench-xen paused xenpal 0.90 0.40").unwrap();
        s.take("dom0: bench-xen paused linux 4.00 3.50").unwrap();
        assert_eq!(s.paused[1], [(4.0, 3.5)]);
        s.take("dom0: bench-xen cpu xenpal 3.50 2.1 3.4").unwrap();
        assert_eq!(s.cpu[0], Some((3.5, 2.1, 3.4)));
        s.take("dom0: bench-xen toolstack 0 0.60 0.25").unwrap();
        s.take("dom0: bench-xen toolstack 20 1.10 0.40").unwrap();
        assert_eq!(s.toolstack[1], (20, 1.1, 0.4));
        assert!(s.take("dom0: bench-xen toolstack x 1.10 0.40").is_err());
        s.take("dom0: bench-xen min-memory 4").unwrap();
        s.take("dom0: bench-xen burst 3 50 0 crashed").unwrap();
        s.take("dom0: bench-xen burst 4 50 12 answering").unwrap();
        for i in 1..=20 {
            s.take(&format!(
                "dom0: bench-xen density {i} 8 {}.00 3.00 2.50",
                1 + i / 10
            ))
            .unwrap();
        }
        s.take("dom0: bench-xen density-serving 20 8 free_memory : 600")
            .unwrap();
        s.take("dom0: bench-xen end").unwrap();
        assert!(s.end);
        let rows = s.rows(100).unwrap();
        let line = |n: &str| rows.iter().find(|r| r.name == n).unwrap().line();
        assert_eq!(
            line("xen-boot-to-serve"),
            "bench: xen-boot-to-serve ours=1.2 s baseline=22.0 s ratio=0.055 goal=<=0.1"
        );
        assert!(
            line("xen-download").contains("ratio=0.500"),
            "{}",
            line("xen-download")
        );
        assert!(line("xen-density-guests").contains("ours=20.0 guests baseline=100.0"));
        assert!(line("xen-density-memory").contains("ratio=0.500"));
        // First 10: 1 s (guests 1-9) and 2 s (guest 10): median 1; last 10: 2 or 3: median 2.
        assert!(line("xen-density-create").contains("ratio=2.000"));

        s.bursts.pop();
        assert!(s.rows(100).unwrap_err().contains("burst"));

        let mut short = Seen::default();
        assert!(
            short
                .take("dom0: bench-xen download xenpal 0.5 1000")
                .unwrap_err()
                .contains("1000 bytes")
        );
        assert!(short.take("dom0: bench-xen boot other 1.0 - 0.5").is_err());
        assert!(short.take("dom0: bench-xen boot xenpal x - 0.5").is_err());
        assert!(short.take("dom0: bench-xen density 1 8 0.7 1.0").is_err());
        assert!(short.take("dom0: bench-xen surprise").is_err());
        assert!(short.rows(100).is_err(), "no samples");
    }
}
